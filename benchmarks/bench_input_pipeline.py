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

import sys
from collections.abc import Sequence

from bench_common import Result, display_path
from bench_engine import alternate_engine_and_hand, run_cli, variant_suffix

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
    plugins: Sequence[str] = (),
    verbose: bool = False,
) -> Result:
    """Median step time of the recipe against the same step on pre-made views, alternating ``rounds`` times."""
    measured = alternate_engine_and_hand(
        recipe,
        steps=steps,
        warmup=warmup,
        rounds=rounds,
        device=device,
        threads=threads,
        variant=variant,
        plugins=plugins,
        premade_views=PREMADE_POOL,
        verbose=verbose,
    )
    return Result(
        benchmark=f"input pipeline {measured.path.stem}{variant_suffix(variant)}",
        ours=measured.median_ms("engine"),
        baseline=measured.median_ms("hand"),
        unit="ms/step",
        higher_is_better=False,
        baseline_name="the same step on views loaded and augmented beforehand",
        target=GPU_INPUT_PIPELINE_TARGET if device.startswith("cuda") else None,
        details={
            "recipe": display_path(measured.path),
            "variant": variant,
            "device": device,
            "threads": threads,
            "batch_size": measured.recipe.train.batch_size,
            "premade_pool_steps": PREMADE_POOL,
            "warmup_steps": warmup,
            "timed_steps": measured.steps,
            "rounds": rounds,
            "sslhub_ms_per_round": measured.ms_per_round("engine"),
            "premade_ms_per_round": measured.ms_per_round("hand"),
        },
    )


def main(argv: list[str] | None = None) -> int:
    return run_cli(compare_input_pipeline, argv, __doc__, default_recipes=["image_simclr"])


if __name__ == "__main__":
    sys.exit(main())
