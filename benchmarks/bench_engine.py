"""Framework overhead: the engine's training step against a hand-written PyTorch loop.

Both loops use the same modules built from the recipe (same encoder, objective, augmentations,
batch, precision and optimizer), the same data, and run alternately in one process; the
figure that matters is the ratio of their median step times (target: within 3%).

    python benchmarks/bench_engine.py recipes/image_simclr.yaml --steps 30 --device cpu
    python benchmarks/bench_engine.py tests/data/toy_recipe.yaml -p toy_plugin --steps 200
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from sslhub.cli import load_and_resolve
from sslhub.engine import Run
from sslhub.optim import build_optimizer


def engine_step_seconds(recipe, steps: int, device: str) -> float:
    """Seconds per step of ``Run`` training, data loading included (timed by the engine)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(recipe, Path(tmp) / "run", show_progress=False)
        run.recipe.model.evaluate.enabled = False
        run.recipe.model.export = None
        start = time.perf_counter()
        summary = run.execute()
        wall = time.perf_counter() - start
    return summary["train_seconds"] / summary["steps"], wall


def hand_written_step_seconds(recipe, steps: int, device: str) -> float:
    """The same work as the engine, written as a plain PyTorch loop; seconds per step, data loading included."""
    with tempfile.TemporaryDirectory() as tmp:
        builder = Run(recipe, Path(tmp) / "run", show_progress=False)
        modality = builder.build_modality()
        encoder = builder.build_encoder(modality)
        objectives = builder.build_objectives(modality, encoder)
        augment = builder.build_augmentations(modality)
    target = torch.device(builder.device)
    parameters = torch.nn.ModuleList([encoder, *objectives])
    optimizer = build_optimizer(parameters, recipe.train.optimizer)
    dataset = modality.train_dataset()
    loader = DataLoader(
        dataset,
        batch_size=recipe.train.batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=modality.collate,
        num_workers=recipe.train.num_workers,
    )
    num_views = max(o.num_views for o in objectives)
    done = 0
    start = time.perf_counter()
    while done < steps:
        for batch in loader:
            batch = modality.on_device({k: v.to(target, non_blocking=True) for k, v in batch.items()})
            views = [augment(dict(batch)) for _ in range(num_views)]
            loss = sum(
                o(views[: o.num_views], encoder).loss * r.weight
                for o, r in zip(objectives, recipe.objectives, strict=True)
            )
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()
            if target.type == "cuda":
                torch.cuda.synchronize(target)
            done += 1
            if done >= steps:
                break
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path)
    parser.add_argument("-p", dest="plugins", action="append", default=[])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path("tests/data").resolve()))
    overrides = [
        f"train.steps={args.steps}",
        f"train.device={args.device}",
        "train.checkpoint_every=1000000",
        "train.log_every=1000000",
        "train.warmup=0",
    ]
    recipe = load_and_resolve(args.recipe, overrides, args.plugins)
    engine, hand = [], []
    for _ in range(args.repeats):
        hand.append(hand_written_step_seconds(recipe, args.steps, args.device))
        engine_seconds, _ = engine_step_seconds(recipe, args.steps, args.device)
        engine.append(engine_seconds)
    engine_median, hand_median = statistics.median(engine), statistics.median(hand)
    print(f"recipe: {args.recipe}  device: {args.device}  steps: {args.steps}  repeats: {args.repeats}")
    print(f"{'loop':<14} {'ms/step':>10}")
    print(f"{'hand-written':<14} {hand_median * 1e3:>10.2f}")
    print(f"{'sslhub engine':<14} {engine_median * 1e3:>10.2f}")
    print(f"engine / hand-written step time: {engine_median / hand_median:.3f} (target <= 1.03)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
