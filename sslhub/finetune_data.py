"""The labeled data of a fine-tune: k samples per class, a validation share, batches in a seeded order.

Everything here is a function of the labels and a seed (no global random state), so a resumed
fine-tune sees exactly the samples and the order an uninterrupted one does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from sslhub.components import Batch, EvalSplit, Modality
from sslhub.errors import SSLHubError


@dataclass(frozen=True)
class LabeledSet:
    """Some samples of a labeled dataset, by index.

    Attributes:
        dataset: samples with an int ``label``.
        indices: ``[N]`` the samples used.
        labels: ``[N]`` their labels.
    """

    dataset: Dataset
    indices: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.indices.numel())

    def subset(self, positions: Tensor) -> LabeledSet:
        """The samples at ``positions`` of this set (positions into ``indices``)."""
        return LabeledSet(self.dataset, self.indices[positions], self.labels[positions])

    def batch(self, modality: Modality, positions: Tensor) -> Batch:
        """The collated samples at ``positions`` (CPU), ``label`` included."""
        return modality.collate([self.dataset[int(i)] for i in self.indices[positions]])


def read_labels(dataset: Dataset) -> Tensor:
    """``[N]`` int labels of a labeled dataset (decodes each sample once)."""
    labels = [int(dataset[i]["label"]) for i in range(len(dataset))]  # type: ignore[arg-type]
    return torch.tensor(labels, dtype=torch.long)


def labeled_set(dataset: Dataset) -> LabeledSet:
    """Every sample of a labeled dataset."""
    labels = read_labels(dataset)
    return LabeledSet(dataset, torch.arange(labels.numel()), labels)


@dataclass(frozen=True)
class FinetuneData:
    """The three sides of a fine-tune: train, validation (early stopping) and test."""

    train: LabeledSet
    validation: LabeledSet | None
    test: LabeledSet
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def class_names_of(split: EvalSplit, train: LabeledSet, test: LabeledSet) -> list[str]:
    """The split's class names, or ``"0"``, ``"1"``, ... when the modality names none."""
    count = int(max(train.labels.max(), test.labels.max())) + 1
    names = [str(name) for name in split.class_names]
    return names if len(names) >= count else [str(i) for i in range(count)]


def draw_shots(labeled: LabeledSet, shots: int | None, seed: int) -> LabeledSet:
    """``shots`` samples of each class, drawn with ``seed`` (all of them for ``None``).

    A class with fewer samples gives all it has.
    """
    if shots is None:
        return labeled
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in torch.unique(labeled.labels).tolist():
        members = (labeled.labels == cls).nonzero().flatten()
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:shots]])
    return labeled.subset(torch.cat(chosen))


def hold_out(labeled: LabeledSet, fraction: float, seed: int) -> tuple[LabeledSet, LabeledSet | None]:
    """Split ``labeled`` into train and validation, ``fraction`` of each class on the validation side.

    Each class with two or more samples gives at least one to validation and keeps at least one.
    """
    if fraction == 0:
        return labeled, None
    generator = torch.Generator().manual_seed(seed + 104729)
    train, validation = [], []
    for cls in torch.unique(labeled.labels).tolist():
        members = (labeled.labels == cls).nonzero().flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        count = min(max(1, round(members.numel() * fraction)), members.numel() - 1)
        validation.append(members[:count])
        train.append(members[count:])
    held = torch.cat(validation)
    if held.numel() == 0:
        raise SSLHubError(
            "finetune.validation_fraction: every class has a single labeled sample, so none can be held out "
            "for validation; use more shots or finetune.validation_fraction=0 with early_stopping=null"
        )
    return labeled.subset(torch.cat(train)), labeled.subset(held)


def balanced_class_weights(labels: Tensor, num_classes: int) -> Tensor:
    """``[C]`` weights ``N / (C * count)`` (0 for a class without samples), for a class-weighted loss."""
    counts = torch.bincount(labels, minlength=num_classes).double()
    weights = labels.numel() / (num_classes * counts.clamp_min(1))
    return torch.where(counts > 0, weights, torch.zeros_like(weights)).float()


class SeededBatches:
    """Batches of a :class:`LabeledSet` in an order drawn per epoch from ``seed`` (resumable).

    An epoch has ``len // batch_size`` full batches (the remainder is dropped, so a batch norm
    never sees a batch of one), or one batch of everything when the set is smaller than a batch.
    ``batch_size`` is the global batch: with ``shard=(rank, world_size)`` each process takes every
    ``world_size``-th sample of it, starting at its rank.
    """

    def __init__(
        self, labeled: LabeledSet, modality: Modality, batch_size: int, seed: int, shard: tuple[int, int] = (0, 1)
    ):
        self.labeled, self.modality, self.seed = labeled, modality, seed
        self.batch_size = min(batch_size, len(labeled))
        self.per_epoch = len(labeled) // self.batch_size
        self.rank, self.world_size = shard
        if self.batch_size < self.world_size:
            raise SSLHubError(
                f"a fine-tuning batch of {self.batch_size} cannot be shared among {self.world_size} processes: "
                "raise finetune.batch_size (or label more samples), or run fewer processes"
            )

    def order(self, epoch: int) -> Tensor:
        return torch.randperm(len(self.labeled), generator=torch.Generator().manual_seed(self.seed * 1000003 + epoch))

    def from_position(self, epoch: int, batch_in_epoch: int) -> Iterator[tuple[int, int, Batch]]:
        """``(epoch, batch_in_epoch, batch)`` forever, starting at that position."""
        while True:
            order = self.order(epoch)
            for index in range(batch_in_epoch, self.per_epoch):
                positions = order[index * self.batch_size : (index + 1) * self.batch_size][self.rank :: self.world_size]
                yield epoch, index, self.labeled.batch(self.modality, positions)
            epoch, batch_in_epoch = epoch + 1, 0


def in_order(labeled: LabeledSet, modality: Modality, batch_size: int) -> Iterator[Batch]:
    """Every sample once, in order, in batches (validation and test)."""
    for start in range(0, len(labeled), batch_size):
        yield labeled.batch(modality, torch.arange(start, min(start + batch_size, len(labeled))))
