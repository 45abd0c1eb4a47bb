"""Input pipeline: batched device-side image augmentation vs per-sample torchvision v2 in a DataLoader.

Both sides apply the same SimCLR view recipe (random resized crop, horizontal flip, colour
jitter with p=0.8, random grayscale, Gaussian blur) to the same uint8 images and deliver
float views on ``--device``:

- per-sample: ``torchvision.transforms.v2`` inside the Dataset, ``--num-workers`` DataLoader
  workers, batches moved to the device afterwards (what most frameworks do);
- batched: the DataLoader only collates uint8 images; the batch moves to the device and
  sslhub_vision's augmentations transform it there in one go.

Prints the median views/s of each (the two alternate ``--rounds`` times) and their ratio;
no assertions (the figure depends on the machine).

    python benchmarks/bench_vision_augment.py --device cpu
    python benchmarks/bench_vision_augment.py --device cuda --batch-size 512 --num-workers 8
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_common import Result, alternate, check_device, median, synchronize, torch_threads
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from sslhub_vision import augmentations as A


class RawImages(Dataset):
    """uint8 ``[3, S, S]`` images, optionally passed through a per-sample transform."""

    def __init__(self, images: torch.Tensor, transform=None):
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.images[index]
        return self.transform(image) if self.transform is not None else image


def torchvision_pipeline(size: int) -> v2.Compose:
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(kernel_size=3, sigma=(0.1, 2.0))], p=0.5),
        ]
    )


def batched_pipeline() -> A.Compose:
    return A.Compose(
        [
            A.RandomResizedCrop(A.RandomResizedCropParams(scale=(0.2, 1.0))),
            A.HorizontalFlip(A.HorizontalFlipParams(p=0.5)),
            A.ColorJitter(A.ColorJitterParams(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8)),
            A.RandomGrayscale(A.RandomGrayscaleParams(p=0.2)),
            A.GaussianBlur(A.GaussianBlurParams(kernel_size=3, sigma=(0.1, 2.0), p=0.5)),
        ]
    )


def views_per_second_torchvision(images, args, device) -> float:
    loader = DataLoader(
        RawImages(images, torchvision_pipeline(args.image_size)),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        persistent_workers=args.num_workers > 0,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )
    count = 0
    for epoch in range(2):  # the first epoch warms up workers and caches
        if epoch == 1:
            synchronize(device)
            start, count = time.perf_counter(), 0
        for batch in loader:
            batch = batch.to(device, non_blocking=True)
            count += batch.shape[0]
    synchronize(device)
    return count / (time.perf_counter() - start)


def views_per_second_batched(images, args, device) -> float:
    loader = DataLoader(
        RawImages(images),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        persistent_workers=args.num_workers > 0,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )
    pipeline = batched_pipeline().to(device)
    count = 0
    for epoch in range(2):
        if epoch == 1:
            synchronize(device)
            start, count = time.perf_counter(), 0
        for batch in loader:
            image = batch.to(device, non_blocking=True).float().div_(255.0)
            view = pipeline({"image": image})["image"]
            count += view.shape[0]
    synchronize(device)
    return count / (time.perf_counter() - start)


def compare_augmentation(
    device: str = "cpu",
    *,
    image_size: int = 32,
    batch_size: int = 256,
    batches: int = 8,
    num_workers: int = 0,
    threads: int | None = 1,
    rounds: int = 3,
) -> Result:
    """Median views/s of the batched device-side pipeline vs per-sample torchvision v2, alternating ``rounds`` times."""
    settings = argparse.Namespace(image_size=image_size, batch_size=batch_size, num_workers=num_workers)
    target = torch.device(device)
    with torch_threads(threads):
        torch.manual_seed(0)
        images = torch.randint(0, 256, (batch_size * batches, 3, image_size, image_size), dtype=torch.uint8)
        results = alternate(
            {
                "torchvision": lambda: views_per_second_torchvision(images, settings, target),
                "batched": lambda: views_per_second_batched(images, settings, target),
            },
            rounds,
        )
        used_threads = torch.get_num_threads()
    return Result(
        benchmark="image augmentation, batched on device",
        ours=median(results["batched"]),
        baseline=median(results["torchvision"]),
        unit="views/s",
        higher_is_better=True,
        baseline_name=f"per-sample torchvision v2 in a DataLoader with {num_workers} workers",
        target=1.0,
        details={
            "device": device,
            "image_size": image_size,
            "batch_size": batch_size,
            "views_per_round": batch_size * batches,
            "num_workers": num_workers,
            "torch_threads": used_threads,
            "rounds": rounds,
            "batched_views_per_s_per_round": results["batched"],
            "torchvision_views_per_s_per_round": results["torchvision"],
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=8, help="batches per timed epoch")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (both sides)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave as is)")
    parser.add_argument("--rounds", type=int, default=3, help="alternate the two pipelines this many times")
    args = parser.parse_args()
    check_device(args.device)
    result = compare_augmentation(
        args.device,
        image_size=args.image_size,
        batch_size=args.batch_size,
        batches=args.batches,
        num_workers=args.num_workers,
        threads=args.threads or None,
        rounds=args.rounds,
    )
    print(
        f"device={args.device} image_size={args.image_size} batch_size={args.batch_size} "
        f"views={result.details['views_per_round']} num_workers={args.num_workers} "
        f"torch_threads={result.details['torch_threads']} rounds={args.rounds} (medians)"
    )
    print(f"per-sample torchvision v2 in DataLoader : {result.baseline:12.0f} views/s")
    print(f"batched sslhub_vision on {args.device:<5}         : {result.ours:12.0f} views/s")
    print(f"ratio batched / per-sample               : {result.ratio:12.2f}x")


if __name__ == "__main__":
    main()
