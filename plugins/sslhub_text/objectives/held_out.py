"""Token-weighted held-out figures of a language-model objective (MLM, next-token prediction)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sslhub import Batch, Encoder, Modality

#: one batch's mean loss, mean accuracy and how many targets the means are over
BatchFigures = Callable[[Batch], tuple[Tensor, Tensor, float]]


@torch.no_grad()
def token_weighted_totals(
    encoder: Encoder, modality: Modality, dataset: Dataset, batch_size: int, figures: BatchFigures
) -> tuple[float, float, float]:
    """Sums of ``loss x targets``, ``accuracy x targets`` and ``targets`` over ``dataset``, encoder in eval mode.

    Args:
        figures: a batch (on the encoder's device, after ``modality.on_device``) to its mean
            loss, mean accuracy and target count.
    """
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    total_loss, total_correct, total = 0.0, 0.0, 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=modality.collate):
        loss, accuracy, count = figures(modality.on_device({k: v.to(device) for k, v in batch.items()}))
        total_loss += float(loss) * count
        total_correct += float(accuracy) * count
        total += count
    encoder.train(was_training)
    return total_loss, total_correct, total
