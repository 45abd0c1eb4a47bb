"""Host loading: a recipe's training batches on the host against hand-written batched indexing.

With ``num_workers: 0`` (the shipped image recipes) the host makes every batch in the training
process, between two steps: on a GPU that time adds to each step unless the step hides it.
Two sides, alternating in one process, on the same in-memory images and the same batch size:

- sslhub: the engine's loader (``device_batches`` on the CPU: sampler, the dataset's
  ``__getitems__``, the modality's collate), batches drawn and counted;
- hand-written: one numpy fancy index per batch into the same uint8 array, turned to a float
  ``[N, C, H, W]`` tensor in 0..1 as the step takes it (what a PyTorch user with the images
  in memory would write). On the CPU the engine's stream also ends in that conversion (the
  modality's ``on_device``); on a GPU both sides would make it on the device.

The ratio is the hand-written time / ours (1.0: the loader costs nothing over bare indexing).
It needs a recipe whose training data is an in-memory image array (the embedded digits or an
``.npz`` source).

    python benchmarks/bench_host_loading.py image_simclr
    python benchmarks/bench_host_loading.py simclr_resnet18_cifar --batches 50
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import Result, alternate, display_path, format_table, machine_description, median, torch_threads
from bench_engine import recipe_path

from sslhub.cli import load_and_resolve
from sslhub.engine import Run
from sslhub.resume import TrainingState
from sslhub.training_data import EpochSampler, device_batches


def _loader_seconds(dataset, modality, spec, batches: int) -> float:
    """Seconds per batch of the engine's own batch stream on the CPU."""
    sampler = EpochSampler(len(dataset), 0, spec.batch_size)
    stream = device_batches(dataset, sampler, modality, TrainingState(), spec, torch.device("cpu"), 0)
    next(stream)  # the DataLoader's first iterator costs a one-off start
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return (time.perf_counter() - start) / batches


def _indexing_seconds(images: np.ndarray, rows: np.ndarray, batch_size: int, batches: int) -> float:
    """Seconds per batch of bare indexing into the images array, in a fresh permutation."""
    order = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).numpy()]
    start = time.perf_counter()
    for index in range(batches):
        chosen = order[(index * batch_size) % (len(order) - batch_size + 1) :][:batch_size]
        array = images[chosen]
        array = array[..., None] if array.ndim == 3 else array
        torch.from_numpy(array).permute(0, 3, 1, 2).float().div_(255)
    return (time.perf_counter() - start) / batches


def compare_host_loading(recipe: str = "image_simclr", *, batches: int = 30, rounds: int = 3) -> Result:
    """Median ms per batch of the engine's loader against bare batched indexing, alternating ``rounds`` times."""
    path = recipe_path(recipe)
    resolved = load_and_resolve(path, ["train.device=cpu", "train.num_workers=0"], [])
    spec = resolved.model.train
    with tempfile.TemporaryDirectory() as tmp:
        modality = Run(resolved, Path(tmp) / "run", show_progress=False).components.modality()
    dataset = modality.train_dataset()
    images, rows = getattr(dataset, "images", None), getattr(dataset, "indices", None)
    if images is None or rows is None:
        raise SystemExit(f"{display_path(path)}: its training data is not an in-memory image array")
    with torch_threads(1):
        measured = alternate(
            {
                "sslhub": lambda: _loader_seconds(dataset, modality, spec, batches),
                "hand": lambda: _indexing_seconds(images, rows, spec.batch_size, batches),
            },
            rounds,
        )
    return Result(
        benchmark=f"host loading {path.stem}",
        ours=median(measured["sslhub"]) * 1e3,
        baseline=median(measured["hand"]) * 1e3,
        unit="ms/batch",
        higher_is_better=False,
        baseline_name="batched numpy indexing into the same array",
        details={
            "recipe": display_path(path),
            "batch_size": spec.batch_size,
            "image_shape": list(images.shape[1:]),
            "batches": batches,
            "rounds": rounds,
            "sslhub_ms_per_round": [round(s * 1e3, 3) for s in measured["sslhub"]],
            "hand_ms_per_round": [round(s * 1e3, 3) for s in measured["hand"]],
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="*", default=["image_simclr"])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    results = [compare_host_loading(r, batches=args.batches, rounds=args.rounds) for r in args.recipes]
    print(machine_description("cpu"))
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
