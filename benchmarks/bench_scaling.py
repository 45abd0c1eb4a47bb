"""Data-parallel scaling: samples/s of ``sslhub run`` under ``torchrun`` with 1 and 2 processes.

Each process keeps the recipe's batch size (the global batch grows with the process
count), so perfect scaling doubles samples/s from 1 to 2 processes. The command is the
one users run, ``python -m torch.distributed.run --standalone --nproc-per-node N -m sslhub
run RECIPE``: on the CPU the processes join a gloo group (CUDA is hidden from them so that
sslhub picks gloo even on a GPU machine); with ``--device cuda`` sslhub picks NCCL and
each process takes the GPU of its local rank, so N is capped at the number of GPUs.

samples/s is read from rank 0's ``metrics.jsonl`` (the engine logs the global rate) over
every step after the first logging window, so process start-up, the first steps and the
final checkpoint are left out. The launches alternate between the process counts.

Beside each data-parallel row is the machine's ceiling for that process count: the same
number of independent single-process runs at once (no communication), summed. On a
small or shared machine that ceiling, not 2x, is what DDP should be held against.

    python benchmarks/bench_scaling.py --recipe image_simclr --processes 1 2 --threads 1
    python benchmarks/bench_scaling.py --device cuda --processes 1 2 4 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from bench_common import Result, alternate, check_device, display_path, format_table, logged_step_time, median

REPO = Path(__file__).resolve().parent.parent
#: with several GPUs, each added GPU should bring at least 90% of linear scaling (PERFORMANCE.md)
GPU_SCALING_TARGET = 0.9


def torchrun_command(recipe: Path, processes: int, run_dir: Path, overrides: Sequence[str]) -> list[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    command += ["-m", "sslhub", "run", str(recipe), "--out", str(run_dir), "--progress", "off"]
    for override in overrides:
        command += ["--set", override]
    return command


def samples_per_second(run_dir: Path, warmup: int, samples_per_step: int) -> float:
    """Global samples/s over the logged windows after the first (rank 0's ``metrics.jsonl``)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    seconds, steps = logged_step_time(records, warmup, samples_per_step)
    if not steps:
        raise RuntimeError(f"{run_dir}: no logged step after the warm-up window of {warmup} steps")
    return steps * samples_per_step / seconds


def _overrides(warmup: int, steps: int, device: str, threads: int) -> list[str]:
    return [
        f"train.steps={warmup + steps}",
        f"train.log_every={warmup}",
        "train.checkpoint_every=1000000000",
        f"train.device={device}",
        f"train.threads={threads}",
        "evaluate.enabled=false",
        "export=null",
    ]


def _environment(device: str, threads: int) -> dict[str, str]:
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    if device == "cpu":
        environment["CUDA_VISIBLE_DEVICES"] = ""  # sslhub picks NCCL whenever it sees CUDA
    return environment


def launch(
    recipe: Path, processes: int, *, warmup: int, steps: int, device: str, threads: int, batch_size: int, scratch: Path
) -> float:
    """One torchrun launch of ``processes`` processes; their global samples/s."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"scaling-{processes}-", dir=scratch))
    completed = subprocess.run(
        torchrun_command(recipe, processes, run_dir, _overrides(warmup, steps, device, threads)),
        capture_output=True,
        text=True,
        env=_environment(device, threads),
        cwd=REPO,
        timeout=1800,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"torchrun with {processes} processes failed:\n{completed.stderr[-3000:]}")
    return samples_per_second(run_dir, warmup, batch_size * processes)


def launch_independent(
    recipe: Path, processes: int, *, warmup: int, steps: int, device: str, threads: int, batch_size: int, scratch: Path
) -> float:
    """``processes`` single-process runs at once, no communication: their summed samples/s.

    This is the machine's own ceiling for the process count (cores, memory bandwidth,
    other load); data-parallel training cannot beat it.
    """
    overrides = _overrides(warmup, steps, device, threads)
    run_dirs, running = [], []
    for index in range(processes):
        run_dir = Path(tempfile.mkdtemp(prefix=f"independent-{processes}-", dir=scratch))
        command = [sys.executable, "-m", "sslhub", "run", str(recipe), "--out", str(run_dir), "--progress", "off"]
        for override in overrides:
            command += ["--set", override]
        environment = _environment(device, threads)
        if device.startswith("cuda"):
            environment["CUDA_VISIBLE_DEVICES"] = str(index)
        run_dirs.append(run_dir)
        running.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environment)
        )
    for process in running:
        _, stderr = process.communicate(timeout=1800)
        if process.returncode != 0:
            raise RuntimeError(f"an independent run failed:\n{stderr[-3000:]}")
    return sum(samples_per_second(run_dir, warmup, batch_size) for run_dir in run_dirs)


def measure_scaling(
    recipe: str | Path = "image_simclr",
    *,
    processes: Sequence[int] = (1, 2),
    warmup: int = 5,
    steps: int = 20,
    rounds: int = 2,
    device: str = "cpu",
    threads: int = 1,
) -> list[Result]:
    """Median global samples/s per process count; one row per count above the smallest, against the smallest."""
    from bench_engine import recipe_path

    from sslhub.cli import load_and_resolve

    path = recipe_path(recipe)
    counts = sorted(set(processes))
    if device.startswith("cuda"):
        available = torch.cuda.device_count()
        if any(count > available for count in counts):
            print(f"scaling: {available} GPU(s) here; process counts above that are left out", file=sys.stderr)
            counts = [count for count in counts if count <= available]
    if len(counts) < 2:
        print("scaling: fewer than two process counts to compare; nothing measured", file=sys.stderr)
        return []
    batch_size = load_and_resolve(path, [], []).train.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        settings = dict(warmup=warmup, steps=steps, device=device, threads=threads, batch_size=batch_size)
        sides = {count: lambda count=count: launch(path, count, scratch=Path(tmp), **settings) for count in counts}
        sides.update(
            {
                f"independent {count}": lambda count=count: launch_independent(
                    path, count, scratch=Path(tmp), **settings
                )
                for count in counts[1:]
            }
        )
        rates = alternate(sides, rounds)
    base = counts[0]
    backend = "nccl" if device.startswith("cuda") else "gloo"
    results = []
    for count in counts[1:]:
        ideal = count / base
        results.append(
            Result(
                benchmark=f"scaling {path.stem}, {count} vs {base} process(es) ({backend})",
                ours=median(rates[count]),
                baseline=median(rates[base]),
                unit="samples/s",
                higher_is_better=True,
                baseline_name=f"{base} process(es) under torchrun",
                # On CPU processes share the machine's cores: correctness is what gloo shows, not speed.
                target=GPU_SCALING_TARGET * ideal if backend == "nccl" else None,
                details={
                    "recipe": display_path(path),
                    "device": device,
                    "backend": backend,
                    "batch_size_per_process": batch_size,
                    "threads_per_process": threads,
                    "warmup_steps": warmup,
                    "timed_steps": steps,
                    "rounds": rounds,
                    "ideal_ratio": ideal,
                    "machine_ceiling_ratio": median(rates[f"independent {count}"]) / median(rates[base]),
                    "samples_per_s_per_round": {str(c): [round(r, 1) for r in v] for c, v in rates.items()},
                },
            )
        )
        results.append(
            Result(
                benchmark=f"  ceiling: {count} independent runs vs {base}, no communication",
                ours=median(rates[f"independent {count}"]),
                baseline=median(rates[base]),
                unit="samples/s",
                higher_is_better=True,
                baseline_name=f"{base} process(es) under torchrun",
                details={"what": "the most this machine gives the process count; DDP cannot beat it"},
            )
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="image_simclr", help="recipe file or shipped recipe name")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps; also the logging window")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per launch")
    parser.add_argument("--rounds", type=int, default=2, help="launches per process count, alternating (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = parser.parse_args()
    check_device(args.device)
    results = measure_scaling(
        args.recipe,
        processes=args.processes,
        warmup=args.warmup,
        steps=args.steps,
        rounds=args.rounds,
        device=args.device,
        threads=args.threads,
    )
    if results:
        print(format_table(results))
        for result in results:
            if "ideal_ratio" in result.details:
                details = result.details
                print(
                    f"{result.benchmark}: ideal ratio {details['ideal_ratio']:.2f}, "
                    f"this machine's ceiling {details['machine_ceiling_ratio']:.2f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
