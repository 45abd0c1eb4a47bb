"""Framework overhead: the engine's training step (what ``sslhub run`` does) against a hand-written PyTorch loop.

Both loops use the same modules built from the recipe (same encoder, objectives,
augmentations, batch, precision, memory format, compile setting, optimizer and LR schedule),
the same data set, and the same torch threads, and they run alternately in one process.

- sslhub: ``Run.execute()`` with evaluation and export off. Its step time is read from the
  throughput it logs (``metrics.jsonl``) over every step after the first logging window,
  so the warm-up steps (allocator, lazy init, compilation) are left out.
- hand-written: a plain loop over a shuffled ``DataLoader``: to device, augment each view,
  forward under autocast, backward, clip if the recipe clips, optimizer and LR-schedule
  step, and one ``loss.item()`` per step (the engine also reads the loss every step, to
  catch non-finite values). Timed over the same steps after the same warm-up.

Before the rounds every training sample is read once (:func:`read_training_data_once`), so
data that a modality makes on first read and keeps is ready, as after a real run's first epoch.

The figure that matters is the ratio of their median step times (target: the engine
within 3% of the hand-written loop), and their peak memory (see ``bench_common``).

    python benchmarks/bench_engine.py recipes/image_simclr.yaml --steps 40 --device cpu --threads 1
    python benchmarks/bench_engine.py image_simclr --device cuda --variants recipe,bf16,bf16+channels_last+compile
    python benchmarks/bench_engine.py tests/data/toy_recipe.yaml -p toy_plugin --steps 200
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from bench_common import (
    PeakMemory,
    Result,
    alternate,
    check_device,
    display_path,
    format_table,
    logged_step_time,
    median,
    memory_ratio,
    synchronize,
)
from torch import Tensor, nn
from torch.utils.data import DataLoader

from sslhub import Modality
from sslhub.cli import load_and_resolve
from sslhub.components import DEFAULT_ENCODER_KEY
from sslhub.engine import Run
from sslhub.optim import build_optimizer, build_schedule
from sslhub.recipe import ResolvedRecipe, TrainSpec
from sslhub.training import PRECISION_DTYPES

REPO = Path(__file__).resolve().parent.parent
#: step time within 3% of the hand-written loop, as a speed ratio
ENGINE_SPEED_TARGET = 1 / 1.03
#: peak memory no more than 10% above the hand-written loop (CPU RSS is a coarse measure)
ENGINE_MEMORY_TARGET = 1.10
#: the training settings a variant name can switch on, each a recipe override
VARIANT_OVERRIDES = {
    "bf16": "train.precision=bf16",
    "fp16": "train.precision=fp16",
    "channels_last": "train.channels_last=true",
    "compile": "train.compile=true",
}


def recipe_path(name_or_path: str | Path) -> Path:
    """``image_simclr`` -> ``recipes/image_simclr.yaml`` (or ``benchmarks/recipes/``); a path stays as it is."""
    path = Path(name_or_path)
    if path.exists():
        return path
    for folder in (REPO / "recipes", REPO / "benchmarks" / "recipes"):
        if (folder / f"{name_or_path}.yaml").exists():
            return folder / f"{name_or_path}.yaml"
    raise SystemExit(f"no recipe file {name_or_path} (nor {name_or_path}.yaml in recipes/ or benchmarks/recipes/)")


def variant_overrides(variant: str) -> list[str]:
    """``recipe`` -> no overrides; ``bf16+channels_last`` -> the overrides of both."""
    if variant in ("", "recipe"):
        return []
    overrides = []
    for part in variant.split("+"):
        if part not in VARIANT_OVERRIDES:
            raise SystemExit(
                f"unknown variant part '{part}': use recipe or a '+' list of {', '.join(VARIANT_OVERRIDES)}"
            )
        overrides.append(VARIANT_OVERRIDES[part])
    return overrides


def load_benchmark_recipe(
    path: Path,
    *,
    warmup: int,
    steps: int,
    device: str,
    threads: int | None,
    variant: str = "recipe",
    plugins: Sequence[str] = (),
) -> ResolvedRecipe:
    """The recipe set up for timing: ``warmup + steps`` steps logged every ``warmup``, no evaluation or export."""
    overrides = [
        f"train.steps={warmup + steps}",
        f"train.log_every={warmup}",
        "train.checkpoint_every=1000000000",
        f"train.device={device}",
        "evaluate.enabled=false",
        "export=null",
        *variant_overrides(variant),
    ]
    # None: torch's own default on both sides (the hand-written loop does not choose threads)
    overrides.append(f"train.threads={threads}" if threads else "train.threads=null")
    return load_and_resolve(path, overrides, list(plugins))


def engine_run(recipe: ResolvedRecipe, warmup: int) -> tuple[float, int | None]:
    """Seconds per step of ``Run`` training after the warm-up window, and its peak memory."""
    spec = recipe.train
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        run = Run(recipe, run_dir, show_progress=False)
        with PeakMemory(run.device) as memory:
            run.execute()
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    samples_per_step = spec.batch_size * spec.grad_accumulation
    seconds, steps = logged_step_time(records, warmup, samples_per_step)
    if steps != spec.steps - warmup:
        raise RuntimeError(f"the engine logged {steps} of the {spec.steps - warmup} timed steps")
    return seconds / steps, memory.peak


class HandWrittenModel(nn.Module):
    """The encoder and the objectives; ``forward`` returns the weighted sum of their losses."""

    def __init__(self, encoder: nn.Module, objectives: Sequence[nn.Module], weights: Sequence[float]):
        super().__init__()
        self.encoder = encoder
        self.objectives = nn.ModuleList(objectives)
        self.weights = list(weights)

    def forward(self, views: list[dict[str, Tensor]]) -> Tensor:
        total = None
        for objective, weight in zip(self.objectives, self.weights, strict=True):
            loss = objective(views[: objective.num_views], self.encoder).loss.float() * weight
            total = loss if total is None else total + loss
        return total


@dataclass
class HandWrittenTrainer:
    """What the hand-written loop trains with, built from the recipe as the engine builds it."""

    spec: TrainSpec
    device: torch.device
    model: HandWrittenModel
    forward: Callable[[list[dict[str, Tensor]]], Tensor]
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype of the recipe's precision (None: fp32, no autocast)."""
        return PRECISION_DTYPES.get(self.spec.precision)

    def step(self, next_views: Callable[[int], list[dict[str, Tensor]]]) -> Tensor:
        """One optimizer step over ``grad_accumulation`` micro-batches; ``next_views(micro)`` gives each one's views."""
        spec = self.spec
        for micro in range(spec.grad_accumulation):
            views = next_views(micro)
            autocast = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()
            with autocast:
                loss = self.forward(views)
            self.scaler.scale(loss / spec.grad_accumulation).backward()
        if spec.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), spec.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        return loss


def build_hand_written_trainer(
    recipe: ResolvedRecipe, builder: Run, objectives: Sequence[nn.Module], encoder: nn.Module
) -> HandWrittenTrainer:
    """The model, optimizer, schedule, scaler and precision of the recipe, put together by hand."""
    spec = recipe.train
    model = HandWrittenModel(encoder, objectives, [o.weight for o in recipe.objectives]).to(builder.device)
    if spec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, spec.optimizer)
    return HandWrittenTrainer(
        spec=spec,
        device=builder.device,
        model=model,
        forward=torch.compile(model) if spec.compile else model,
        optimizer=optimizer,
        schedule=build_schedule(optimizer, spec, spec.steps),
        scaler=torch.amp.GradScaler(builder.device.type, enabled=spec.precision == "fp16"),
    )


def view_maker(
    loader: DataLoader, modality: Modality, augment: Callable, num_views: int, device: torch.device, channels_last: bool
) -> Callable[[], list[dict[str, Tensor]]]:
    """A function giving the next batch's augmented views on ``device``, cycling over ``loader`` without end."""

    def batches():
        while True:
            yield from loader

    data = batches()

    def as_channels_last(view: dict[str, Tensor]) -> dict[str, Tensor]:
        return {
            k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 and v.is_floating_point() else v
            for k, v in view.items()
        }

    def make_views() -> list[dict[str, Tensor]]:
        batch = next(data)
        batch = modality.on_device({k: v.to(device, non_blocking=True) for k, v in batch.items()})
        views = [augment(dict(batch)) for _ in range(num_views)]
        return [as_channels_last(view) for view in views] if channels_last else views

    return make_views


def hand_written_run(
    recipe: ResolvedRecipe, warmup: int, premade_views: int = 0, step_cpu_seconds: list[float] | None = None
) -> tuple[float, int | None]:
    """The same work as the engine as a plain PyTorch loop: seconds per step after ``warmup`` steps, peak memory.

    With ``premade_views`` > 0 the loop loads and augments that many steps' views up front,
    on the device, and cycles through them: the same training step with no input pipeline.
    ``step_cpu_seconds``, when given, receives each step's host CPU time (``time.thread_time``).
    """
    spec = recipe.train
    if any(o.start_step for o in recipe.objectives) or list(recipe.encoders) != [DEFAULT_ENCODER_KEY]:
        raise ValueError("the hand-written loop covers one encoder and objectives active from step 0")
    with tempfile.TemporaryDirectory() as tmp:
        builder = Run(recipe, Path(tmp) / "run", show_progress=False)
        device = builder.device
        with PeakMemory(device) as memory:
            modality = builder.components.modality()
            encoders = builder.components.encoders(modality)
            objectives = builder.components.objectives(modality, encoders)
            augment = builder.components.augmentations(modality)
            trainer = build_hand_written_trainer(recipe, builder, objectives, encoders[DEFAULT_ENCODER_KEY])
            loader = DataLoader(
                modality.train_dataset(),
                batch_size=spec.batch_size,
                shuffle=True,
                drop_last=True,
                collate_fn=modality.collate,
                num_workers=spec.num_workers,
                pin_memory=device.type == "cuda",
            )
            num_views = max(o.num_views for o in objectives)
            make_views = view_maker(loader, modality, augment, num_views, device, spec.channels_last)
            premade = [make_views() for _ in range(premade_views)]
            trainer.model.train()
            start = time.perf_counter()
            for step in range(spec.steps):
                step_start = time.thread_time()
                if step == warmup:
                    synchronize(device)
                    start = time.perf_counter()
                if premade:
                    loss = trainer.step(
                        lambda micro, step=step: premade[(step * spec.grad_accumulation + micro) % len(premade)]
                    )
                else:
                    loss = trainer.step(lambda micro: make_views())
                loss.item()
                if step_cpu_seconds is not None:
                    step_cpu_seconds.append(time.thread_time() - step_start)
            synchronize(device)
            seconds = (time.perf_counter() - start) / (spec.steps - warmup)
    return seconds, memory.peak


def read_training_data_once(recipe: ResolvedRecipe) -> None:
    """Read every training sample once before the clocks start, as a real run has after its first epoch.

    Data a modality makes on first read and keeps (the audio plugin's synthetic clips, a few
    ms each on the host) would otherwise be made inside the timed steps of a short benchmark,
    on both sides, and the rows would time the data maker instead of the training step.
    """
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Run(recipe, Path(tmp) / "run", show_progress=False).components.modality().train_dataset()
        if not hasattr(dataset, "__len__"):
            return
        for index in range(len(dataset)):
            dataset[index]


@dataclass
class Alternated:
    """What :func:`alternate_engine_and_hand` measured: per side, ``(seconds per step, peak bytes)`` per round."""

    path: Path
    recipe: ResolvedRecipe
    steps: int
    rounds: dict[str, list[tuple[float, int | None]]]

    def median_ms(self, side: str) -> float:
        return median([seconds for seconds, _ in self.rounds[side]]) * 1e3

    def ms_per_round(self, side: str) -> list[float]:
        return [round(seconds * 1e3, 3) for seconds, _ in self.rounds[side]]


def alternate_engine_and_hand(
    recipe: str | Path,
    *,
    steps: int,
    warmup: int,
    rounds: int,
    device: str,
    threads: int | None,
    variant: str,
    plugins: Sequence[str] = (),
    premade_views: int = 0,
    verbose: bool = False,
) -> Alternated:
    """The engine and the hand-written loop (fed ``premade_views`` when > 0), alternating ``rounds`` times.

    ``steps`` is rounded up to a multiple of ``warmup`` (the engine's logging window).
    """
    if warmup < 1 or steps < 1 or rounds < 1:
        raise ValueError(f"warmup, steps and rounds must be >= 1, got {warmup}, {steps}, {rounds}")
    steps = math.ceil(steps / warmup) * warmup
    path = recipe_path(recipe)
    loaded = load_benchmark_recipe(
        path, warmup=warmup, steps=steps, device=device, threads=threads, variant=variant, plugins=plugins
    )
    read_training_data_once(loaded)
    hand_label = "hand, pre-made views" if premade_views else "hand"

    def report(side: str, value: tuple[float, int | None]) -> None:
        if verbose:
            peak = "-" if value[1] is None else f"{value[1] / 2**20:.0f} MiB"
            label = hand_label if side == "hand" else side
            print(f"  {path.stem} [{variant}] {label}: {value[0] * 1e3:.2f} ms/step, peak {peak}", flush=True)

    results = alternate(
        {
            "hand": lambda: hand_written_run(loaded, warmup, premade_views=premade_views),
            "engine": lambda: engine_run(loaded, warmup),
        },
        rounds,
        report,
    )
    return Alternated(path, loaded, steps, results)


def variant_suffix(variant: str) -> str:
    """`` [bf16]`` for a benchmark row's name; nothing for the recipe as written."""
    return "" if variant in ("", "recipe") else f" [{variant}]"


def compare_engine(
    recipe: str | Path,
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
    """Median step time and peak memory of the engine vs the hand-written loop, alternating ``rounds`` times.

    ``steps`` is rounded up to a multiple of ``warmup`` (the engine's logging window).
    """
    measured = alternate_engine_and_hand(
        recipe,
        steps=steps,
        warmup=warmup,
        rounds=rounds,
        device=device,
        threads=threads,
        variant=variant,
        plugins=plugins,
        verbose=verbose,
    )
    path, loaded, steps, results = measured.path, measured.recipe, measured.steps, measured.rounds
    engine_ms, hand_ms = measured.median_ms("engine"), measured.median_ms("hand")
    samples = loaded.train.batch_size * loaded.train.grad_accumulation
    name = f"engine {path.stem}{variant_suffix(variant)}"
    return Result(
        benchmark=name,
        ours=engine_ms,
        baseline=hand_ms,
        unit="ms/step",
        higher_is_better=False,
        baseline_name="hand-written PyTorch loop, same modules",
        target=ENGINE_SPEED_TARGET,
        memory_ratio=memory_ratio([p for _, p in results["engine"]], [p for _, p in results["hand"]]),
        memory_target=ENGINE_MEMORY_TARGET,
        details={
            "recipe": display_path(path),
            "variant": variant,
            "device": device,
            "threads": threads,
            "batch_size": loaded.train.batch_size,
            "precision": loaded.train.precision,
            "channels_last": loaded.train.channels_last,
            "compile": loaded.train.compile,
            "warmup_steps": warmup,
            "timed_steps": steps,
            "rounds": rounds,
            "engine_samples_per_s": samples / (engine_ms / 1e3),
            "hand_samples_per_s": samples / (hand_ms / 1e3),
            "engine_ms_per_round": measured.ms_per_round("engine"),
            "hand_ms_per_round": measured.ms_per_round("hand"),
            "engine_peak_bytes_per_round": [p for _, p in results["engine"]],
            "hand_peak_bytes_per_round": [p for _, p in results["hand"]],
        },
    )


def run_cli(
    compare: Callable[..., Result], argv: list[str] | None, description: str, default_recipes: Sequence[str] = ()
) -> int:
    """The command line of this benchmark and of ``bench_input_pipeline``: ``compare`` per recipe and variant."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "recipes",
        nargs="*" if default_recipes else "+",
        default=list(default_recipes),
        help="recipe files, or names of shipped recipes (image_simclr)",
    )
    parser.add_argument("-p", dest="plugins", action="append", default=[], help="extra plugin module (repeatable)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per run (a multiple of --warmup)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first; also the logging window")
    parser.add_argument("--rounds", "--repeats", type=int, default=3, help="alternate the two loops this many times")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's choice)")
    parser.add_argument(
        "--variants",
        default="recipe",
        help="comma-separated: recipe (as written) or '+' lists of bf16, fp16, channels_last, compile",
    )
    args = parser.parse_args(argv)
    check_device(args.device)
    sys.path.insert(0, str(REPO / "tests" / "data"))  # the toy plugin of the engine tests
    results = [
        compare(
            recipe,
            steps=args.steps,
            warmup=args.warmup,
            rounds=args.rounds,
            device=args.device,
            threads=args.threads or None,
            variant=variant,
            plugins=args.plugins,
            verbose=True,
        )
        for recipe in args.recipes
        for variant in args.variants.split(",")
    ]
    print(format_table(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(compare_engine, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
