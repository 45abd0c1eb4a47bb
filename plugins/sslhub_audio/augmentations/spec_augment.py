"""SpecAugment masks on log-mel features: ``time_mask`` and ``frequency_mask``.

``features: [B, n_mels, frames]``. Each of ``count`` masks is applied with probability ``p``
and covers a width drawn uniformly from ``[0, max_width]`` at a uniform position, chosen
independently per sample on the batch's device. Masked values are replaced by each clip's
mean feature value (0 after per-utterance normalisation).

References:
    - Park et al., "SpecAugment: A Simple Data Augmentation Method for Automatic Speech
      Recognition", Interspeech 2019.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from sslhub import Augmentation, BuildContext, Params
from sslhub_audio.augmentations._common import check_key


def band_masks(batch_size: int, length: int, count: int, max_width: int, p: float, device: torch.device) -> Tensor:
    """Union of ``count`` random bands per row.

    Args:
        batch_size: rows ``B``.
        length: positions per row ``L``.
        count: bands per row.
        max_width: widths are uniform in ``[0, min(max_width, L)]``.
        p: probability that each band is applied.
        device: where the random numbers are drawn.

    Returns:
        ``[B, L]`` bool, True inside a band.
    """
    mask = torch.zeros(batch_size, length, dtype=torch.bool, device=device)
    if count == 0 or max_width == 0:
        return mask
    max_width = min(max_width, length)
    positions = torch.arange(length, device=device)
    widths = torch.floor(torch.rand(batch_size, count, device=device) * (max_width + 1)).long()
    starts = torch.floor(torch.rand(batch_size, count, device=device) * (length - widths + 1)).long()
    applied = torch.rand(batch_size, count, device=device) < p
    inside = (positions >= starts[..., None]) & (positions < (starts + widths)[..., None])  # [B, count, L]
    return (inside & applied[..., None]).any(dim=1)


class SpecMaskParams(Params):
    """Parameters of a SpecAugment mask."""

    max_width: int = Field(
        10, ge=0, description="Largest mask width (frames for time_mask, mel bins for frequency_mask)."
    )
    count: int = Field(2, ge=0, description="Masks per sample.")
    p: float = Field(1.0, ge=0, le=1, description="Probability that each mask is applied.")


class _SpecMask(Augmentation):
    axis: int = -1
    name: str = ""

    def __init__(self, params: SpecMaskParams, context: BuildContext | None = None):
        super().__init__()
        self.params = params

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        features = check_key(batch, "features", self.name)
        if features.dim() != 3:
            raise ValueError(f"{self.name} expects features [batch, n_mels, frames], got {tuple(features.shape)}")
        p = self.params
        mask = band_masks(features.shape[0], features.shape[self.axis], p.count, p.max_width, p.p, features.device)
        mask = mask[:, None, :] if self.axis == 2 else mask[:, :, None]
        fill = features.mean(dim=(1, 2), keepdim=True)
        return {**batch, "features": torch.where(mask, fill, features)}


class TimeMask(_SpecMask):
    """SpecAugment time masking: blank random spans of frames per sample."""

    axis = 2
    name = "time_mask"


class FrequencyMask(_SpecMask):
    """SpecAugment frequency masking: blank random bands of mel bins per sample."""

    axis = 1
    name = "frequency_mask"
