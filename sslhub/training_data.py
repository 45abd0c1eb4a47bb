"""The training data stream: a resumable, seeded, rank-sharded order of batches on the device."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from sslhub.components import Batch, Modality

if TYPE_CHECKING:
    from sslhub.recipe import TrainSpec
    from sslhub.resume import TrainingState


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, sharded across ranks, that can start mid-epoch.

    Its own generator keeps the data order independent of the global RNG, so the
    position in the data is just ``(epoch, batches_done)`` in a checkpoint.
    """

    def __init__(self, size: int, seed: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.batch_size = size, seed, batch_size
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0
        self.per_rank = size // world_size

    def batches_per_epoch(self) -> int:
        return self.per_rank // self.batch_size

    def __iter__(self):
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        mine = order[self.rank : self.per_rank * self.world_size : self.world_size]
        usable = self.batches_per_epoch() * self.batch_size
        # Indices stay in one int64 array (8 bytes each) rather than a Python list (~36 bytes
        # each): with streamed corpora of tens of millions of samples that is the difference.
        return map(int, mine[self.start_batch * self.batch_size : usable].numpy())

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() * self.batch_size - self.start_batch * self.batch_size)


def total_steps(spec: TrainSpec, sampler: EpochSampler) -> int:
    """``train.steps``, else ``train.epochs`` worth of optimizer steps (at least one)."""
    if spec.steps is not None:
        return spec.steps
    per_epoch = sampler.batches_per_epoch() // spec.grad_accumulation
    return max(1, int(math.ceil(spec.epochs * per_epoch)))


def device_batches(
    dataset: Dataset,
    sampler: EpochSampler,
    modality: Modality,
    state: TrainingState,
    spec: TrainSpec,
    device: torch.device,
    seed: int,
) -> Iterator[Batch]:
    """Yield device batches forever, tracking the data position in ``state``."""
    sampler.epoch, sampler.start_batch = state.epoch, state.batch_in_epoch
    while True:
        loader = DataLoader(
            dataset,
            batch_size=spec.batch_size,
            sampler=sampler,
            collate_fn=modality.collate,
            num_workers=spec.num_workers,
            pin_memory=device.type == "cuda",
            drop_last=True,
            persistent_workers=False,
            # A private generator keeps worker seeding from consuming the global RNG,
            # which must advance identically in an uninterrupted and a resumed run.
            generator=torch.Generator().manual_seed(seed + state.epoch),
        )
        for batch in loader:
            state.batch_in_epoch += 1
            batch = {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}
            yield modality.on_device(batch)
        state.epoch += 1
        state.batch_in_epoch = 0
        sampler.epoch, sampler.start_batch = state.epoch, 0


def make_views(augment: nn.Sequential, batch: Batch, count: int, channels_last: bool) -> list[Batch]:
    """``count`` augmented views of ``batch`` (image-like tensors channels-last when asked)."""
    views = [augment(dict(batch)) for _ in range(count)]
    if channels_last:
        views = [
            {
                k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 and v.is_floating_point() else v
                for k, v in view.items()
            }
            for view in views
        ]
    return views
