"""The thread default: ``train.threads: auto`` against torch's default and against 1 thread.

On a small or busy CPU, torch's default (one intra-op thread per core) can make small steps
many times slower, because every operator waits for the thread whose core another process
holds. ``auto`` gives torch the cores the load average says are free. The three settings run
alternately in one process through the engine (``Run.execute``), on the same recipe and steps;
the figures are seconds per step after the warm-up window and the ratios of ``auto`` to each.

    python benchmarks/bench_threads.py                       # image_simclr, 40 steps, 3 rounds
    python benchmarks/bench_threads.py recipes/audio_masked.yaml --steps 20 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from bench_common import alternate, machine_description, median, torch_threads
from bench_engine import engine_run, recipe_path

from sslhub.cli import load_and_resolve
from sslhub.threads import automatic_threads

SETTINGS = ("null", "1", "auto")


def timed_setting(recipe: Path, setting: str, warmup: int, steps: int, default_threads: int) -> float:
    """Seconds per step of the engine with ``train.threads`` set to ``setting`` (each run starts from torch's default)."""
    overrides = [
        f"train.steps={warmup + steps}",
        f"train.log_every={warmup}",
        "train.checkpoint_every=1000000000",
        "train.device=cpu",
        f"train.threads={setting}",
        "evaluate.enabled=false",
        "export=null",
    ]
    resolved = load_and_resolve(recipe, overrides, [])
    with torch_threads(default_threads):
        seconds, _ = engine_run(resolved, warmup)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", nargs="?", default="image_simclr")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    recipe = recipe_path(args.recipe)
    default_threads = torch.get_num_threads()
    machine = machine_description("cpu")
    auto_now = automatic_threads()
    results = alternate(
        {s: (lambda s=s: timed_setting(recipe, s, args.warmup, args.steps, default_threads)) for s in SETTINGS},
        args.rounds,
        on_result=lambda name, value: print(f"  threads={name}: {value * 1000:.1f} ms/step", file=sys.stderr),
    )
    step = {name: median(values) for name, values in results.items()}
    print(
        f"{recipe.name}, {args.steps} steps x {args.rounds} rounds, torch default {default_threads} threads, "
        f"auto chose {auto_now} at start, load {machine['load_average_1_5_15']}"
    )
    for name in SETTINGS:
        print(f"  threads={name:<5} {step[name] * 1000:8.1f} ms/step   auto speed-up {step[name] / step['auto']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "ms_per_step": {k: v * 1000 for k, v in step.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
