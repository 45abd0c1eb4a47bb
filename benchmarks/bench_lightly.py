"""Peer comparison: lightly's SimCLR pieces in a plain PyTorch loop vs sslhub's ``image_simclr`` recipe.

Both sides train the same encoder (built from ``recipes/image_simclr.yaml``: the small CNN,
same seed, same initial weights) on the same embedded digits (scikit-learn, 32x32, the
recipe's train split), with the same batch size, number of epochs, temperature, projection
head shape, AdamW learning rate and weight decay, cosine schedule with the same warm-up,
and the same torch threads:

- lightly: ``lightly.transforms.SimCLRTransform`` per sample on PIL images in DataLoader
  workers (set to the recipe's crop scale, colour jitter, blur and no flip; no normalisation,
  since the encoder normalises inside), ``SimCLRProjectionHead`` and ``NTXentLoss``, and a
  plain loop with ``torch.optim.AdamW`` over all parameters (torch's default: weight decay
  on norms and biases too) and a ``LambdaLR`` warm-up + cosine schedule;
- sslhub: ``Run.execute()`` of the recipe (batched augmentation on the device).

Reported: training throughput (images/s, two views each) and kNN accuracy (sslhub.evaluate,
the recipe's k, on the recipe's held-out split) after the same number of epochs, with the
random-init encoder's kNN accuracy beside them.

lightly is optional: ``pip install -e .[bench]`` (it pins ``lightly==1.6.*``; installing it
into this project's environment adds pytorch-lightning, torchmetrics, hydra-core, omegaconf
and aiohttp, and changes none of torch, torchvision or numpy). Without it this prints a
message and exits 0.

    python benchmarks/bench_lightly.py --epochs 27 --threads 1 --num-workers 2
    python benchmarks/bench_lightly.py --device cuda --epochs 27 --num-workers 8
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from bench_common import Result, check_device, format_table, synchronize, torch_threads
from torch.utils.data import DataLoader, Dataset

from sslhub.cli import load_and_resolve
from sslhub.components import DEFAULT_ENCODER_KEY
from sslhub.engine import Run
from sslhub.evaluate import embed_dataset, knn_accuracy

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "image_simclr.yaml"
MISSING_LIGHTLY = (
    "lightly is not installed: the peer comparison is skipped. Install it with "
    "`pip install -e .[bench]` (lightly==1.6.*) to run it."
)


def lightly_available() -> bool:
    try:
        import lightly  # noqa: F401
    except ImportError:
        return False
    return True


class PILViews(Dataset):
    """uint8 ``[C, S, S]`` images from a dataset of ``{"image": ...}``, as PIL images through a view transform."""

    def __init__(self, images: Dataset, transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        from torchvision.transforms.v2.functional import to_pil_image

        return self.transform(to_pil_image(self.images[index]["image"]))


def _recipe(epochs: float, batches_per_epoch: int, device: str, threads: int | None, batch_size: int | None):
    overrides = [
        f"train.steps={max(1, math.ceil(epochs * batches_per_epoch))}",
        f"train.device={device}",
        "train.checkpoint_every=1000000000",
        "evaluate.enabled=false",
        "export=null",
    ]
    if threads:
        overrides.append(f"train.threads={threads}")
    if batch_size:
        overrides.append(f"train.batch_size={batch_size}")
    return load_and_resolve(RECIPE, overrides, [])


def _knn(encoder, modality, recipe, device) -> float:
    split = modality.eval_split()
    knn = recipe.model.evaluate.knn
    train_x, train_y = embed_dataset(encoder, modality, split.train, device)
    test_x, test_y = embed_dataset(encoder, modality, split.test, device)
    return knn_accuracy(train_x, train_y, test_x, test_y, knn.k, knn.temperature)


def train_sslhub(recipe, run_dir: Path) -> tuple[float, float]:
    """Images/s of the recipe's training (the engine's step timer) and kNN accuracy of the trained encoder."""
    run = Run(recipe, run_dir, show_progress=False)
    summary = run.execute()
    images_per_s = summary["steps"] * recipe.train.batch_size / summary["train_seconds"]
    trained = Run(recipe, run_dir, show_progress=False).load_trained()
    modality, encoder = trained.modality, trained.encoders[DEFAULT_ENCODER_KEY]
    return images_per_s, _knn(encoder, modality, recipe, run.device)


def train_lightly(recipe, run_dir: Path, num_workers: int) -> tuple[float, float]:
    """Images/s of a plain loop over lightly's transform, head and loss, and kNN accuracy of the trained encoder."""
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform

    spec = recipe.train
    builder = Run(recipe, run_dir, show_progress=False)
    device = builder.device
    modality = builder.components.modality()
    encoder = builder.components.encoders(modality)[
        DEFAULT_ENCODER_KEY
    ]  # seeded: the same initial weights as the recipe's run
    crop = next(a for a in recipe.augmentations if a.component.name == "random_resized_crop").params
    jitter = next(a for a in recipe.augmentations if a.component.name == "color_jitter").params
    blur = next(a for a in recipe.augmentations if a.component.name == "gaussian_blur").params
    simclr = recipe.objectives[0].params
    transform = SimCLRTransform(
        input_size=modality.image_size,
        cj_prob=jitter.p,
        cj_strength=1.0,
        cj_bright=jitter.brightness,
        cj_contrast=jitter.contrast,
        cj_sat=jitter.saturation,
        cj_hue=jitter.hue,
        min_scale=crop.scale[0],
        random_gray_scale=0.0,
        gaussian_blur=blur.p,
        sigmas=tuple(blur.sigma),
        hf_prob=0.0,
        normalize=None,
    )
    head = SimCLRProjectionHead(encoder.feature_dim, encoder.feature_dim, simclr.projection_dim).to(device)
    criterion = NTXentLoss(temperature=simclr.temperature)
    parameters = [*encoder.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=spec.optimizer.lr, weight_decay=spec.optimizer.weight_decay)
    warmup = int(round(spec.warmup * spec.steps))

    def lr_factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, spec.steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    loader = DataLoader(
        PILViews(modality.train_dataset(), transform),
        batch_size=spec.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=device.type == "cuda",
    )
    encoder.train()
    head.train()
    step = 0
    synchronize(device)
    start = time.perf_counter()
    while step < spec.steps:
        for first, second in loader:
            views = torch.cat([first, second]).to(device, non_blocking=True)
            projections = head(encoder({"image": views}).pooled)
            loss = criterion(projections[: len(first)], projections[len(first) :])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            loss.item()
            step += 1
            if step >= spec.steps:
                break
    synchronize(device)
    images_per_s = step * spec.batch_size / (time.perf_counter() - start)
    return images_per_s, _knn(encoder, modality, recipe, device)


def random_init_knn(recipe, run_dir: Path) -> float:
    builder = Run(recipe, run_dir, show_progress=False)
    modality = builder.components.modality()
    return _knn(builder.components.encoders(modality)[DEFAULT_ENCODER_KEY], modality, recipe, builder.device)


def compare_lightly(
    device: str = "cpu",
    *,
    epochs: float = 27,
    batch_size: int | None = None,
    num_workers: int = 2,
    threads: int | None = 1,
) -> list[Result]:
    """Throughput and kNN accuracy of lightly's SimCLR loop vs the recipe; empty when lightly is missing.

    ``epochs`` = 27 is about the recipe's own 300 steps (11 batches of 128 per epoch).
    """
    if not lightly_available():
        print(MISSING_LIGHTLY, file=sys.stderr)
        return []
    import lightly

    with torch_threads(threads), tempfile.TemporaryDirectory() as tmp:
        probe = _recipe(1, 1, device, threads, batch_size)
        train_size = len(Run(probe, Path(tmp) / "probe", show_progress=False).components.modality().train_dataset())
        batches_per_epoch = train_size // probe.train.batch_size
        recipe = _recipe(epochs, batches_per_epoch, device, threads, batch_size)
        lightly_rate, lightly_knn = train_lightly(recipe, Path(tmp) / "lightly", num_workers)
        ours_rate, ours_knn = train_sslhub(recipe, Path(tmp) / "sslhub")
        baseline_knn = random_init_knn(recipe, Path(tmp) / "random")
    details: dict[str, Any] = {
        "lightly_version": lightly.__version__,
        "device": device,
        "epochs": epochs,
        "steps": recipe.train.steps,
        "batch_size": recipe.train.batch_size,
        "train_images": train_size,
        "lightly_num_workers": num_workers,
        "threads": threads,
        "random_init_knn_accuracy": baseline_knn,
    }
    return [
        Result(
            benchmark="simclr vs lightly, training",
            ours=ours_rate,
            baseline=lightly_rate,
            unit="images/s",
            higher_is_better=True,
            baseline_name=f"lightly {lightly.__version__} SimCLRTransform + NTXentLoss, plain loop",
            details=details,
        ),
        Result(
            benchmark=f"simclr vs lightly, kNN after {epochs:g} epochs",
            ours=ours_knn,
            baseline=lightly_knn,
            unit="accuracy",
            higher_is_better=True,
            baseline_name=f"lightly {lightly.__version__} SimCLRTransform + NTXentLoss, plain loop",
            details=details,
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=float, default=27, help="passes over the training images (both sides)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's (128)")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers of the lightly loop")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's choice)")
    args = parser.parse_args()
    check_device(args.device)
    results = compare_lightly(
        args.device,
        epochs=args.epochs,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        threads=args.threads or None,
    )
    if not results:
        return 0
    print(format_table(results))
    print(f"random-init encoder kNN accuracy: {results[0].details['random_init_knn_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
