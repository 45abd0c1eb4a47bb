"""Held-out validation during training: what ``train.validate_every`` runs and early stopping watches.

It is the end-of-run evaluation's held-out pass (:func:`sslhub.evaluation.held_out_sums`) with
one figure more per batch, the weighted total objective loss (``val_loss``), taken through the
training augmentations. Randomness (augmentations, masks) is drawn from the recipe's seed, the
same at every validation, so two validations differ only by the weights; the training RNG
state is put back afterwards, so a run that validates trains exactly as one that does not.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Subset

from sslhub import distributed
from sslhub.building import TrainingModule
from sslhub.components import Batch, Modality
from sslhub.evaluation import EvaluationSetup, evaluating, held_out_sums, mean_of_sums
from sslhub.recipe import TrainSpec
from sslhub.resume import restore_rng_state, rng_state, seed_everything
from sslhub.training import autocast
from sslhub.training_data import make_views

#: the prefix of validation figures in ``metrics.jsonl`` and events (``val_loss``, ``val_mlm/mlm_accuracy``).
PREFIX = "val_"


class HeldOutValidation:
    """Validates a :class:`TrainingModule` on the modality's held-out samples.

    Args:
        setup: the run's evaluation setup (held-out batch size and cap, objective names and keys, seed).
        modality: collates and moves the held-out batches.
        dataset: the held-out samples (:meth:`Modality.held_out_dataset`).
        augment: the training augmentations, through which the total loss takes its views.
        spec: the recipe's ``train`` section (precision, channels_last).
    """

    def __init__(
        self, setup: EvaluationSetup, modality: Modality, dataset: Dataset, augment: nn.Module, spec: TrainSpec
    ):
        self.setup, self.modality, self.augment, self.spec = setup, modality, augment, spec
        self.dataset = _rank_shard(dataset)

    def __call__(self, module: TrainingModule, step: int) -> dict[str, float]:
        """``{"val_loss": ..., "val_OBJECTIVE/METRIC": ...}``, the same on every rank."""
        device = self.setup.device
        saved = rng_state(device)
        seed_everything(self.setup.seed)
        try:
            objectives = list(module.objectives)
            extra = self._total_loss(module, step)
            sums, count = held_out_sums(self.setup, self.modality, module.encoder, objectives, self.dataset, extra)
        finally:
            restore_rng_state(saved, device)
        sums, count = _summed_over_ranks(sums, count)
        return {PREFIX + key: value for key, value in mean_of_sums(sums, count).items()}

    def _total_loss(self, module: TrainingModule, step: int):
        """The per-batch figure ``loss``: what training minimises, on a held-out batch, without gradients."""
        active = module.active_at(step)
        num_views = max(o.num_views for o in module.objectives)

        def figures(batch: Batch) -> dict[str, float]:
            views = make_views(self.augment, batch, num_views, self.spec.channels_last)
            with evaluating(module), autocast(self.spec, self.setup.device):
                loss, _ = module(views, active)
            return {"loss": float(loss)}

        return figures


def _rank_shard(dataset: Dataset) -> Dataset:
    """This rank's equal share: every rank runs the same number of batches (objectives may gather)."""
    world = distributed.world_size()
    if world == 1:
        return dataset
    usable = len(dataset) // world * world  # type: ignore[arg-type]
    return Subset(dataset, range(distributed.rank(), usable, world))


def _summed_over_ranks(sums: dict[str, float], count: int) -> tuple[dict[str, float], int]:
    """Every rank's sums added in rank order, so each rank ends with the same numbers."""
    if not distributed.is_distributed():
        return sums, count
    gathered: list[Any] = [None] * distributed.world_size()
    dist.all_gather_object(gathered, (sums, count))
    total: dict[str, float] = {}
    for rank_sums, _ in gathered:
        for key, value in rank_sums.items():
            total[key] = total.get(key, 0.0) + value
    return total, sum(rank_count for _, rank_count in gathered)
