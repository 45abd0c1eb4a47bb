"""Input pipeline cost: a recipe's training throughput against the same step fed with pre-made views.

PERFORMANCE.md's target: with device-side batched augmentation, an image SimCLR recipe on
a GPU reaches at least 90% of the throughput of the same training step fed with tensors
that are already loaded and augmented. Two sides, alternating in one process:

- sslhub: ``Run.execute()`` of the recipe (loading, collating, moving and augmenting every
  batch on the device, then the step), timed as in ``bench_engine``;
- pre-made: the hand-written loop of ``bench_engine`` with the same modules and settings,
  fed from a pool of views loaded and augmented before the clock starts, so it measures
  the training step alone.

The ratio is the pre-made step time / ours: the share of the bare step's throughput the
recipe keeps. On a GPU the target is 0.90. On the CPU the augmentations run on the same
cores as the model, so the ratio there says how much of the step the input pipeline takes
and has no target.

    python benchmarks/bench_input_pipeline.py image_simclr --device cpu --threads 1
    python benchmarks/bench_input_pipeline.py image_simclr --device cuda --variants recipe,bf16+channels_last
"""

from __future__ import annotations

import argparse
import math
import sys

from bench_common import Result, alternate, check_device, display_path, format_table, median
from bench_engine import engine_run, hand_written_run, load_benchmark_recipe, recipe_path

#: share of the pre-made step's throughput the recipe must keep on a GPU
GPU_INPUT_PIPELINE_TARGET = 0.90
#: steps' worth of views made before timing; the pre-made loop cycles through them
PREMADE_POOL = 8


def compare_input_pipeline(
    recipe: str = "image_simclr",
    *,
    steps: int = 40,
    warmup: int = 10,
    rounds: int = 3,
    device: str = "cpu",
    threads: int | None = 1,
    variant: str = "recipe",
    verbose: bool = False,
) -> Result:
    """Median step time of the recipe against the same step on pre-made views, alternating ``rounds`` times."""
    if warmup < 1 or steps < 1 or rounds < 1:
        raise ValueError(f"warmup, steps and rounds must be >= 1, got {warmup}, {steps}, {rounds}")
    steps = math.ceil(steps / warmup) * warmup
    path = recipe_path(recipe)
    loaded = load_benchmark_recipe(path, warmup=warmup, steps=steps, device=device, threads=threads, variant=variant)

    def report(side: str, value: tuple[float, int | None]) -> None:
        if verbose:
            print(f"  {path.stem} [{variant}] {side}: {value[0] * 1e3:.2f} ms/step", flush=True)

    results = alternate(
        {
            "pre-made": lambda: hand_written_run(loaded, warmup, premade_views=PREMADE_POOL),
            "sslhub": lambda: engine_run(loaded, warmup),
        },
        rounds,
        report,
    )
    ours_ms = median([seconds for seconds, _ in results["sslhub"]]) * 1e3
    premade_ms = median([seconds for seconds, _ in results["pre-made"]]) * 1e3
    name = f"input pipeline {path.stem}" + ("" if variant in ("", "recipe") else f" [{variant}]")
    return Result(
        benchmark=name,
        ours=ours_ms,
        baseline=premade_ms,
        unit="ms/step",
        higher_is_better=False,
        baseline_name="the same step on views loaded and augmented beforehand",
        target=GPU_INPUT_PIPELINE_TARGET if device.startswith("cuda") else None,
        details={
            "recipe": display_path(path),
            "variant": variant,
            "device": device,
            "threads": threads,
            "batch_size": loaded.train.batch_size,
            "premade_pool_steps": PREMADE_POOL,
            "warmup_steps": warmup,
            "timed_steps": steps,
            "rounds": rounds,
            "sslhub_ms_per_round": [round(s * 1e3, 3) for s, _ in results["sslhub"]],
            "premade_ms_per_round": [round(s * 1e3, 3) for s, _ in results["pre-made"]],
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="*", default=["image_simclr"], help="recipe files or shipped recipe names")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per run (a multiple of --warmup)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first; also the logging window")
    parser.add_argument("--rounds", type=int, default=3, help="alternate the two sides this many times")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's choice)")
    parser.add_argument("--variants", default="recipe", help="comma-separated, as for bench_engine.py")
    args = parser.parse_args(argv)
    check_device(args.device)
    results = [
        compare_input_pipeline(
            recipe,
            steps=args.steps,
            warmup=args.warmup,
            rounds=args.rounds,
            device=args.device,
            threads=args.threads or None,
            variant=variant,
            verbose=True,
        )
        for recipe in args.recipes
        for variant in args.variants.split(",")
    ]
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
