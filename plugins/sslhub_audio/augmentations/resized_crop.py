"""``spec_resized_crop``: stretch a random region of the log-mel back to the full size.

Per clip, a region of the spectrogram, ``time_scale`` times as long and ``freq_scale`` times
as tall as the original (values above 1 reach past the edges, which read as the clip's mean),
at a random offset, is resampled (bilinear) to the original ``[n_mels, frames]``. Along time
this is a speed change with a crop; along the mel axis a shift and stretch of the bands, the
log-mel shadow of a pitch and formant change, which is what differs between speakers. The
parameters are drawn on the batch's device (no host sync).

References:
    - Niizumi et al., "BYOL for Audio: Self-Supervised Learning for General-Purpose Audio
      Representation", IJCNN 2021, https://arxiv.org/abs/2103.06695 (random resize crop of
      log-mel, crop scales 0.6-1.5)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from sslhub import Augmentation, BuildContext, Params
from sslhub_audio.augmentations._common import check_key


class ResizedCropParams(Params):
    """Parameters of ``spec_resized_crop``."""

    time_scale: tuple[float, float] = Field(
        (0.6, 1.5), description="Range of the region's length as a multiple of the clip's frames."
    )
    freq_scale: tuple[float, float] = Field(
        (0.6, 1.5), description="Range of the region's height as a multiple of the mel bands."
    )
    p: float = Field(1.0, ge=0, le=1, description="Probability that a clip is cropped (else left as it is).")

    @model_validator(mode="after")
    def _ordered(self) -> ResizedCropParams:
        for name in ("time_scale", "freq_scale"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {[low, high]}")
        return self


def _uniform(low: float, high: float, size: int, device: torch.device) -> Tensor:
    return low + (high - low) * torch.rand(size, device=device)


def crop_grid(batch: int, height: int, width: int, params: ResizedCropParams, device: torch.device) -> Tensor:
    """Sampling grid ``[B, height, width, 2]`` of one random region per clip (normalised coordinates)."""
    theta = torch.zeros(batch, 2, 3, device=device)
    for row, (low, high) in ((0, params.time_scale), (1, params.freq_scale)):
        scale = _uniform(low, high, batch, device)
        slack = (1 - scale).abs()  # how far the region's centre can move and stay on (or cover) the clip
        offset = (2 * torch.rand(batch, device=device) - 1) * slack
        applied = torch.rand(batch, device=device) < params.p
        theta[:, row, row] = torch.where(applied, scale, torch.ones_like(scale))
        theta[:, row, 2] = torch.where(applied, offset, torch.zeros_like(offset))
    return F.affine_grid(theta, [batch, 1, height, width], align_corners=False)


class SpecResizedCrop(Augmentation):
    """BYOL-A's random resize crop on ``features [B, n_mels, frames]``; same shape out."""

    def __init__(self, params: ResizedCropParams, context: BuildContext | None = None):
        super().__init__()
        self.params = params

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        features = check_key(batch, "features", "spec_resized_crop")
        if features.dim() != 3:
            raise ValueError(f"spec_resized_crop expects features [batch, n_mels, frames], got {tuple(features.shape)}")
        count, height, width = features.shape
        mean = features.mean(dim=(1, 2), keepdim=True)
        grid = crop_grid(count, height, width, self.params, features.device).to(features.dtype)
        # Sampled around the clip's mean so that reaching past the edges reads as the mean, not 0.
        cropped = F.grid_sample(
            (features - mean)[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        return {**batch, "features": cropped[:, 0] + mean}
