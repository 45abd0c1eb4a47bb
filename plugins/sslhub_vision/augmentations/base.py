"""Shared plumbing of the image augmentations: input checks and per-sample application."""

from __future__ import annotations

import torch
from torch import Tensor

from sslhub import Augmentation, Batch


class ImageAugmentation(Augmentation):
    """Base of the batched image augmentations: they transform ``batch["image"]`` only.

    Subclasses implement :meth:`transform` on float ``[B, C, H, W]`` images in ``[0, 1]``
    and return a new tensor; the other batch keys are passed through untouched.
    """

    def forward(self, batch: Batch) -> Batch:
        if "image" not in batch:
            raise ValueError(f"{type(self).__name__} needs an 'image' entry in the batch; found {sorted(batch)}")
        image = batch["image"]
        if image.ndim != 4 or not image.is_floating_point():
            raise ValueError(
                f"{type(self).__name__} expects float images [B, C, H, W] in [0, 1] (after the modality's "
                f"on_device); got {image.dtype} of shape {list(image.shape)}"
            )
        return {**batch, "image": self.transform(image)}

    def transform(self, image: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def sample_mask(batch_size: int, p: float, device: torch.device) -> Tensor:
    """Bernoulli(``p``) draw per sample: ``[B]`` bool, from torch's RNG on ``device``."""
    return torch.rand(batch_size, device=device) < p


def where_mask(mask: Tensor, changed: Tensor, original: Tensor) -> Tensor:
    """Per-sample choice: ``changed[i]`` where ``mask[i]`` else ``original[i]``."""
    return torch.where(mask.view(-1, *([1] * (original.ndim - 1))), changed, original)


def uniform(low: float, high: float, size: int, device: torch.device) -> Tensor:
    """``[size]`` draws from U(low, high) using torch's RNG on ``device``."""
    return torch.empty(size, device=device).uniform_(low, high)
