"""What the engine's training step does beyond the hand-written loop's, counted on the CPU.

On a GPU the shipped recipes' small models are paced by the host: every aten operation is
a kernel launch and the Python between them is time the device waits for. What the engine
adds per step therefore shows up on a GPU in proportion to two figures that the CPU measures
just as well, each for the engine and for ``bench_engine``'s hand-written loop (same
modules, data, batch and precision):

- **aten operations per step**, counted by a ``TorchDispatchMode`` (deterministic: the same
  count on every machine and every run, so ``tests/benchmarks`` can hold it);
- **host CPU milliseconds per step** (``time.thread_time``: the CPU the main thread spent,
  so other processes on a busy machine do not count), at ``train.batch_size=4`` with one
  torch thread, where compute is small beside the host work around it.

Each is the difference between a run of ``2N`` steps and one of ``N`` steps, divided by
``N``: building, the first step, logging at the end and the final checkpoint cancel out.
The engine logs only at its last step in both runs (``train.log_every`` = the run's
length), so the figures are per training step; logging costs ``1/log_every`` of one
metrics read on top.

    python benchmarks/bench_step_overhead.py autoencoder_image audio_masked --steps 20
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from bench_common import Result, alternate, display_path, format_table
from bench_engine import ENGINE_SPEED_TARGET, hand_written_run, recipe_path
from torch.utils._python_dispatch import TorchDispatchMode

from sslhub.cli import load_and_resolve
from sslhub.engine import Run
from sslhub.recipe import ResolvedRecipe
from sslhub.training import TrainingLoop

#: where compute is small beside the host work per step (a GPU's view of these models)
SMALL_BATCH = 4


class OpCounter(TorchDispatchMode):
    """Counts the aten operations (by name) run while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def load_recipe(path: Path, steps: int, batch_size: int | None, plugins: Sequence[str] = ()) -> ResolvedRecipe:
    """The recipe for ``steps`` steps on one CPU thread, logged at its last step only, no evaluation or export."""
    overrides = [
        f"train.steps={steps}",
        f"train.log_every={steps}",
        "train.checkpoint_every=1000000000",
        "train.device=cpu",
        "train.threads=1",
        "evaluate.enabled=false",
        "report.enabled=false",
        "export=null",
    ]
    if batch_size is not None:
        overrides.append(f"train.batch_size={batch_size}")
    return load_and_resolve(path, overrides, list(plugins))


def engine_training(recipe: ResolvedRecipe, step_cpu_seconds: list[float] | None = None) -> None:
    """``sslhub run``'s training; ``step_cpu_seconds`` receives each step's host CPU time."""
    original = TrainingLoop._train_one_step

    def timed_step(loop: TrainingLoop) -> None:
        start = time.thread_time()
        original(loop)
        step_cpu_seconds.append(time.thread_time() - start)  # type: ignore[union-attr]

    if step_cpu_seconds is not None:
        TrainingLoop._train_one_step = timed_step  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            Run(recipe, Path(tmp) / "run", show_progress=False).execute()
    finally:
        TrainingLoop._train_one_step = original  # type: ignore[method-assign]


def hand_training(recipe: ResolvedRecipe, step_cpu_seconds: list[float] | None = None) -> None:
    hand_written_run(recipe, warmup=1, step_cpu_seconds=step_cpu_seconds)


SIDES: dict[str, Callable[..., None]] = {"engine": engine_training, "hand": hand_training}


def ops_per_step(
    path: Path, side: str, steps: int, batch_size: int | None, plugins: Sequence[str] = ()
) -> dict[str, float]:
    """Aten operations by name in one step: (run of ``2 * steps``) - (run of ``steps``), over ``steps``."""
    counts = []
    for length in (steps, 2 * steps):
        counter = OpCounter()
        with counter:
            SIDES[side](load_recipe(path, length, batch_size, plugins))
        counts.append(counter.counts)
    short, long = counts
    per_step = {name: (long[name] - short[name]) / steps for name in long | short}
    return {name: count for name, count in per_step.items() if count}


def host_seconds_per_step(recipe: ResolvedRecipe, side: str, skip: int) -> float:
    """The median host CPU time of one step, leaving out the first ``skip`` steps (lazy setup)."""
    seconds: list[float] = []
    SIDES[side](recipe, step_cpu_seconds=seconds)
    return statistics.median(seconds[skip:])


def extra_ops(engine: dict[str, float], hand: dict[str, float]) -> dict[str, float]:
    """Per aten operation, how many more per step the engine runs (negative: fewer)."""
    diff = {name: engine.get(name, 0.0) - hand.get(name, 0.0) for name in engine.keys() | hand.keys()}
    # below half an operation a step: a one-off of setup that differed between the two runs
    return {name: value for name, value in sorted(diff.items(), key=lambda kv: -abs(kv[1])) if abs(value) >= 0.5}


def compare_step_overhead(
    recipe: str | Path,
    *,
    steps: int = 10,
    batch_size: int | None = SMALL_BATCH,
    rounds: int = 3,
    plugins: Sequence[str] = (),
    verbose: bool = False,
) -> list[Result]:
    """Two rows: aten ops per step (information) and host ms per step (target: within 3%), engine vs hand.

    Host time: per side, the median step of a run of ``4 * steps`` steps (the first ``steps``
    left out), the median over ``rounds`` runs, the two sides alternating.
    """
    path = recipe_path(recipe)
    threads = torch.get_num_threads()
    try:
        ops = {side: ops_per_step(path, side, steps, batch_size, plugins) for side in ("hand", "engine")}
        timed = load_recipe(path, 4 * steps, batch_size, plugins)
        host = alternate(
            {side: (lambda side=side: host_seconds_per_step(timed, side, skip=steps)) for side in ("hand", "engine")},
            rounds,
        )
    finally:
        torch.set_num_threads(threads)  # the runs set train.threads process-wide
    engine_ops, hand_ops = sum(ops["engine"].values()), sum(ops["hand"].values())
    extra = extra_ops(ops["engine"], ops["hand"])
    engine_ms, hand_ms = (statistics.median(host[side]) * 1e3 for side in ("engine", "hand"))
    if verbose:
        print(f"  {path.stem}: engine {engine_ops:.0f} ops/step, hand {hand_ops:.0f}; engine - hand: {extra}")
        print(f"  {path.stem}: host CPU ms/step engine {engine_ms:.3f}, hand {hand_ms:.3f}")
    details = {
        "recipe": display_path(path),
        "batch_size": batch_size,
        "steps": steps,
        "rounds": rounds,
        "engine_minus_hand_ops": extra,
        "engine_host_ms_per_round": [round(v * 1e3, 3) for v in host["engine"]],
        "hand_host_ms_per_round": [round(v * 1e3, 3) for v in host["hand"]],
    }
    baseline = "hand-written PyTorch loop, same modules"
    return [
        Result(
            benchmark=f"step ops {path.stem}",
            ours=engine_ops,
            baseline=hand_ops,
            unit="aten ops/step",
            higher_is_better=False,
            baseline_name=baseline,
            details=details,
        ),
        Result(
            benchmark=f"step host time {path.stem}",
            ours=engine_ms,
            baseline=hand_ms,
            unit="host CPU ms/step",
            higher_is_better=False,
            baseline_name=baseline,
            target=ENGINE_SPEED_TARGET,
            details=details,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", help="recipe files, or names of shipped recipes (autoencoder_image)")
    parser.add_argument("-p", dest="plugins", action="append", default=[], help="extra plugin module (repeatable)")
    parser.add_argument("--steps", type=int, default=10, help="N: runs of N and 2N steps are compared")
    parser.add_argument("--batch-size", type=int, default=SMALL_BATCH, help="0: the recipe's own")
    parser.add_argument("--rounds", type=int, default=3, help="host time: alternate the two loops this many times")
    args = parser.parse_args(argv)
    results = [
        row
        for recipe in args.recipes
        for row in compare_step_overhead(
            recipe,
            steps=args.steps,
            batch_size=args.batch_size or None,
            rounds=args.rounds,
            plugins=args.plugins,
            verbose=True,
        )
    ]
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
