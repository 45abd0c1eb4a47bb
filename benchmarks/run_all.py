"""Run every benchmark and print one table of ratios, each measured side by side in this one process run.

    python benchmarks/run_all.py --quick                      # a few minutes on 2 CPU cores
    python benchmarks/run_all.py --json benchmarks/results-cpu.json --markdown benchmarks/results-cpu.md
    python benchmarks/run_all.py --device cuda --json benchmarks/results-cuda.json
    python benchmarks/run_all.py --only engine:image_simclr,augment

Benchmarks (``--only`` takes these names, comma-separated; ``engine`` and ``onnx`` select
all of their kind, and so do ``input``, ``loading`` and ``overhead``):

- ``engine:<recipe>``: ``sslhub run``'s step time and peak memory against a hand-written
  PyTorch loop with the same modules, data, batch and precision (target: within 3%), for
  image_simclr, image_inpainting, text_mlm, audio_masked, autoencoder_image, mae_image.
  With ``--device cuda`` each recipe also runs with bf16, bf16 + channels_last, and
  bf16 + channels_last + torch.compile (``--variants`` picks others).
- ``overhead:<recipe>``: on the CPU whatever ``--device``, for the ``engine`` recipes: the aten
  operations per step and the host CPU time per step (batch 4, one thread) of the engine
  against the same hand-written loop, the figures that pace a GPU running these small models
  (see ``bench_step_overhead``).
- ``input:<recipe>``: a SimCLR recipe's throughput against the same training step fed with
  views loaded and augmented beforehand (target on a GPU: 90%; on the CPU, information), in
  the same variants as ``engine``, for image_simclr and simclr_resnet18_cifar.
- ``loading:<recipe>``: on the host whatever ``--device``, for the same recipes: ms per batch
  of the engine's batch stream (sampler, the dataset's batched ``__getitems__``, collate)
  against bare numpy indexing into the same in-memory images (see ``bench_host_loading``).
- ``simclr_resnet18_cifar`` (``benchmarks/recipes/``) is PERFORMANCE.md's GPU anchor workload
  (ResNet-18, CIFAR stem, 32x32, batch 512): its ``engine`` and ``input`` rows run with
  ``--device cuda``, and on the CPU only when ``--only`` names them.
- ``augment``: batched device-side image augmentation against per-sample torchvision v2 in
  DataLoader workers.
- ``mlm``: our MLM step against ``BertForMaskedLM`` + ``DataCollatorForLanguageModeling``
  (BERT 128 wide, 2 layers on the CPU; on a GPU BERT-base at sequence 128, in fp32 and bf16).
- ``onnx:<recipe>``: onnxruntime against PyTorch eager on the CPU, batch 1 and 32, for the
  encoder of image_simclr, text_mlm, audio_masked, mae_image and autoencoder_tabular: every
  encoder family the recipes use (the other recipes reuse these encoders).
- ``lightly``: lightly's SimCLR transform and loss in a plain loop against the image_simclr
  recipe: throughput and kNN accuracy after the same epochs (skipped without lightly).
- ``scaling``: samples/s of 2 processes against 1 under torchrun (gloo on CPU, NCCL on GPUs).

Each ratio is oriented so that above 1 means ours is better; see ``bench_common`` for the
peak-memory measure. Timings go to the table and the JSON, never into tests.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from bench_common import Result, check_device, format_table, machine_description, write_json

ENGINE_RECIPES = ("image_simclr", "image_inpainting", "text_mlm", "audio_masked", "autoencoder_image", "mae_image")
#: PERFORMANCE.md's GPU anchor workload (benchmarks/recipes/): on a GPU only, unless --only names it
GPU_RECIPES = ("simclr_resnet18_cifar",)
INPUT_RECIPES = ("image_simclr", *GPU_RECIPES)
ONNX_RECIPES = ("image_simclr", "text_mlm", "audio_masked", "mae_image", "autoencoder_tabular")
CUDA_VARIANTS = "recipe,bf16,bf16+channels_last,bf16+channels_last+compile"
#: on a GPU the MLM rows use PERFORMANCE.md's anchor shape: BERT-base, sequence 128, batch 64
MLM_GPU_SIZE = {"hidden": 768, "layers": 12, "heads": 12, "max_length": 128, "batch_size": 64, "vocab_size": 30522}


@dataclass
class Settings:
    """How long each benchmark measures; ``--quick`` and the full run differ only here."""

    engine_warmup: int
    engine_steps: int
    rounds: int
    augment_batches: int
    mlm_steps: int
    mlm_warmup: int
    onnx_repeats: int
    lightly_epochs: float
    scaling_steps: int
    scaling_rounds: int


QUICK = Settings(
    engine_warmup=5,
    engine_steps=10,
    rounds=3,
    augment_batches=4,
    mlm_steps=8,
    mlm_warmup=2,
    onnx_repeats=10,
    lightly_epochs=2,
    scaling_steps=10,
    scaling_rounds=1,
)
FULL = Settings(
    engine_warmup=10,
    engine_steps=40,
    rounds=5,
    augment_batches=8,
    mlm_steps=20,
    mlm_warmup=3,
    onnx_repeats=50,
    lightly_epochs=27,
    scaling_steps=30,
    scaling_rounds=3,
)


def benchmark_plan(args: argparse.Namespace, settings: Settings) -> dict[str, Callable[[], list[Result]]]:
    """Every benchmark by name, as a call that returns its rows (not yet run)."""
    from bench_engine import compare_engine
    from bench_host_loading import compare_host_loading
    from bench_input_pipeline import compare_input_pipeline
    from bench_lightly import compare_lightly
    from bench_onnx import compare_onnx_for_recipes
    from bench_scaling import measure_scaling
    from bench_step_overhead import compare_step_overhead
    from bench_text_mlm import compare_mlm
    from bench_vision_augment import compare_augmentation

    cuda = args.device.startswith("cuda")
    threads = args.threads or None
    workers = args.num_workers if args.num_workers is not None else min(8, os.cpu_count() or 1)
    variants = (args.variants or (CUDA_VARIANTS if cuda else "recipe")).split(",")
    plan: dict[str, Callable[[], list[Result]]] = {}
    step_comparisons = {
        "engine": (compare_engine, (*ENGINE_RECIPES, *GPU_RECIPES)),
        "input": (compare_input_pipeline, INPUT_RECIPES),
    }
    for kind, (compare, recipes) in step_comparisons.items():
        for recipe in recipes:
            plan[f"{kind}:{recipe}"] = lambda compare=compare, recipe=recipe: [
                compare(
                    recipe,
                    steps=settings.engine_steps,
                    warmup=settings.engine_warmup,
                    rounds=settings.rounds,
                    device=args.device,
                    threads=threads,
                    variant=variant,
                    verbose=args.verbose,
                )
                for variant in variants
            ]
    for recipe in ENGINE_RECIPES:
        plan[f"overhead:{recipe}"] = lambda recipe=recipe: compare_step_overhead(
            recipe, steps=settings.engine_warmup, rounds=settings.rounds, verbose=args.verbose
        )
    for recipe in INPUT_RECIPES:
        plan[f"loading:{recipe}"] = lambda recipe=recipe: [
            compare_host_loading(recipe, batches=settings.engine_steps, rounds=settings.rounds)
        ]
    plan["augment"] = lambda: [
        compare_augmentation(
            args.device,
            batch_size=512 if cuda else 256,
            batches=settings.augment_batches,
            num_workers=workers,
            threads=threads,
            rounds=settings.rounds,
        )
    ]
    plan["mlm"] = lambda: [
        compare_mlm(
            args.device,
            precision=precision,
            steps=settings.mlm_steps,
            warmup=settings.mlm_warmup,
            rounds=settings.rounds,
            threads=threads,
            **(MLM_GPU_SIZE if cuda else {}),
        )
        for precision in (("fp32", "bf16") if cuda else ("fp32",))
    ]
    for recipe in ONNX_RECIPES:
        plan[f"onnx:{recipe}"] = lambda recipe=recipe: compare_onnx_for_recipes(
            [recipe], repeats=settings.onnx_repeats, threads=threads
        )
    plan["lightly"] = lambda: compare_lightly(
        args.device, epochs=settings.lightly_epochs, num_workers=workers, threads=threads
    )
    plan["scaling"] = lambda: measure_scaling(
        "image_simclr",
        processes=(1, 2),
        warmup=settings.engine_warmup,
        steps=settings.scaling_steps,
        rounds=settings.scaling_rounds,
        device=args.device,
        threads=threads or 1,
    )
    return plan


def select(plan: dict[str, Callable[[], list[Result]]], only: str | None, cuda: bool = False) -> list[str]:
    """The benchmark names ``--only`` picks; ``engine`` / ``input`` / ``loading`` / ``overhead`` / ``onnx`` pick their whole kind.

    The GPU-sized recipes run on a GPU, or on the CPU only when ``--only`` names them exactly.
    """
    gpu_only = {key for key in plan if key.split(":", 1)[-1] in GPU_RECIPES}
    if not only:
        return [key for key in plan if cuda or key not in gpu_only]
    chosen: list[str] = []
    for name in (part.strip() for part in only.split(",") if part.strip()):
        matches = [key for key in plan if key == name or (key.startswith(name + ":") and (cuda or key not in gpu_only))]
        if not matches:
            raise SystemExit(
                f"--only: no benchmark '{name}'; choose from {', '.join(plan)}, engine, input, loading, overhead, onnx"
            )
        chosen += [match for match in matches if match not in chosen]
    return chosen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (ONNX latency is always measured on the CPU)")
    parser.add_argument("--quick", action="store_true", help="fewer steps, rounds and epochs: minutes, not an hour")
    parser.add_argument("--only", help="comma-separated benchmark names (see above)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: 1 on cpu, torch's on cuda)"
    )
    parser.add_argument("--num-workers", type=int, default=None, help="DataLoader workers of the per-sample baselines")
    parser.add_argument("--variants", help=f"engine variants, comma-separated (cuda default: {CUDA_VARIANTS})")
    parser.add_argument("--steps", type=int, help="override the engine's timed steps")
    parser.add_argument("--warmup", type=int, help="override the engine's warm-up steps (its logging window)")
    parser.add_argument("--rounds", type=int, help="override how often the sides alternate")
    parser.add_argument("--json", type=Path, help="write the results, settings and machine as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the table and the machine as Markdown here")
    parser.add_argument("--verbose", action="store_true", help="print every round of the engine benchmarks")
    args = parser.parse_args(argv)
    if args.threads is None and not args.device.startswith("cuda"):
        args.threads = 1  # the shared 2-core machines: one thread per process is the steadiest
    return args


def chosen_settings(args: argparse.Namespace) -> Settings:
    """QUICK or FULL, with the steps, warm-up and rounds the command line overrides."""
    settings = QUICK if args.quick else FULL
    if not (args.steps or args.warmup or args.rounds):
        return settings
    return Settings(
        **{
            **vars(settings),
            "engine_steps": args.steps or settings.engine_steps,
            "engine_warmup": args.warmup or settings.engine_warmup,
            "rounds": args.rounds or settings.rounds,
        }
    )


def run_benchmarks(plan: dict[str, Callable[[], list[Result]]], names: list[str]) -> tuple[list[Result], list[str]]:
    """``(results, failed)``: each named benchmark's rows, printed as they come, and the names that raised."""
    results: list[Result] = []
    failed: list[str] = []
    for name in names:
        began = time.perf_counter()
        try:
            rows = plan[name]()
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
            print(f"[{name}] failed", file=sys.stderr, flush=True)
            continue
        for row in rows:
            print(f"[{name}] {row.benchmark}: ratio {row.ratio:.3f} ({row.verdict})", flush=True)
        if not rows:
            print(f"[{name}] skipped", flush=True)
        results.extend(rows)
        print(f"[{name}] {time.perf_counter() - began:.0f} s", flush=True)
    return results, failed


def write_outputs(args: argparse.Namespace, results: list[Result], machine: dict, run_settings: dict) -> None:
    """The ``--json`` and ``--markdown`` files, when asked for."""
    if args.json:
        write_json(args.json, results, machine, run_settings)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"- {key}: {value}" for key, value in machine.items()]
        args.markdown.write_text(format_table(results, markdown=True) + "\n\n" + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_device(args.device)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = chosen_settings(args)
    plan = benchmark_plan(args, settings)
    names = select(plan, args.only, cuda=args.device.startswith("cuda"))
    machine = machine_description(args.device)
    if args.threads:
        machine["torch_threads"] = args.threads
    print(
        f"{len(names)} benchmark(s) on {args.device}: {machine['cpu']}, {machine['cpu_cores']} cores"
        + (f", {machine['gpu']}" if "gpu" in machine else "")
        + f"; torch {machine['torch']}; threads {args.threads or torch.get_num_threads()}; "
        f"load average {machine['load_average_1_5_15']}",
        flush=True,
    )
    start = time.perf_counter()
    results, failed = run_benchmarks(plan, names)
    machine["load_average_after"] = [round(value, 2) for value in os.getloadavg()]
    print()
    print(format_table(results))
    print(
        "\nratio: ours vs the baseline, > 1 means ours is better (faster, or more accurate); "
        f"peak mem ratio: ours / baseline ({machine['memory_measure']})."
    )
    print(f"total {time.perf_counter() - start:.0f} s; load average after: {machine['load_average_after']}")
    write_outputs(args, results, machine, {"quick": args.quick, "threads": args.threads, **vars(settings)})
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
