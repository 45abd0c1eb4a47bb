"""Per-sample reconstruction errors: mean squared, mean absolute, binary cross-entropy."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

RECONSTRUCTION_LOSSES = ("mse", "l1", "bce")


def reconstruction_error(output: Tensor, target: Tensor, loss: str = "mse", logits: bool = False) -> Tensor:
    """Mean reconstruction error of each sample over its elements.

    Args:
        output: ``[B, ...]`` the decoder's output: predicted values, or (``logits=True``)
            pre-sigmoid logits of values in ``[0, 1]``.
        target: ``[B, ...]`` the clean input, same shape as ``output``; in ``[0, 1]`` for ``bce``.
        loss: ``mse`` (squared error), ``l1`` (absolute error) or ``bce`` (binary cross-entropy,
            the Bernoulli negative log-likelihood; for data in ``[0, 1]`` only).
        logits: whether ``output`` holds logits; ``mse``/``l1`` then compare ``sigmoid(output)``.
            ``bce`` on logits uses the numerically stable ``binary_cross_entropy_with_logits``.

    Returns:
        ``[B]`` float32 mean error per sample.

    Raises:
        ValueError: unknown ``loss`` or mismatched shapes.
    """
    if loss not in RECONSTRUCTION_LOSSES:
        raise ValueError(f"unknown reconstruction loss {loss!r}; choose one of {', '.join(RECONSTRUCTION_LOSSES)}")
    if output.shape != target.shape:
        raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} must have the same shape")
    output, target = output.float(), target.float()
    if loss == "bce":
        if logits:
            error = F.binary_cross_entropy_with_logits(output, target, reduction="none")
        else:
            error = F.binary_cross_entropy(output.clamp(1e-6, 1 - 1e-6), target, reduction="none")
    else:
        prediction = output.sigmoid() if logits else output
        error = (prediction - target).square() if loss == "mse" else (prediction - target).abs()
    return error.flatten(1).mean(dim=1)
