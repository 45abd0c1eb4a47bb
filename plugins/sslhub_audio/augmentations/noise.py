"""``additive_noise``: add white Gaussian noise at a random SNR, then recompute the features."""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import Tensor

from sslhub import Augmentation, BuildContext, Params
from sslhub_audio.augmentations._common import check_key, featurizer_from


class AdditiveNoiseParams(Params):
    """Parameters of ``additive_noise``."""

    min_snr_db: float = Field(5.0, description="Lowest signal-to-noise ratio in dB.")
    max_snr_db: float = Field(30.0, description="Highest signal-to-noise ratio in dB.")
    p: float = Field(0.5, ge=0, le=1, description="Probability that a sample gets noise.")

    @model_validator(mode="after")
    def _ordered(self) -> AdditiveNoiseParams:
        if self.min_snr_db > self.max_snr_db:
            raise ValueError(f"min_snr_db ({self.min_snr_db}) must be <= max_snr_db ({self.max_snr_db})")
        return self


def add_noise_at_snr(waveform: Tensor, noise: Tensor, snr_db: Tensor) -> Tensor:
    """Mix ``noise`` into ``waveform`` so that ``10 log10(P_signal / P_noise) = snr_db`` per row.

    Args:
        waveform: ``[B, T]``.
        noise: ``[B, T]``, any scale.
        snr_db: ``[B]``; ``+inf`` adds nothing.

    Returns:
        ``[B, T]``.
    """
    signal_power = waveform.pow(2).mean(dim=1)
    noise_power = noise.pow(2).mean(dim=1).clamp_min(1e-12)
    scale = torch.sqrt(signal_power / noise_power * torch.pow(10.0, -snr_db / 10.0))
    return waveform + scale[:, None] * noise


class AdditiveNoise(Augmentation):
    """White noise at ``snr ~ U(min_snr_db, max_snr_db)`` dB per sample (with probability ``p``)."""

    def __init__(self, params: AdditiveNoiseParams, context: BuildContext):
        super().__init__()
        self.params = params
        self.featurize = featurizer_from(context, "additive_noise")

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        waveform = check_key(batch, "waveform", "additive_noise")
        p = self.params
        batch_size, device = waveform.shape[0], waveform.device
        snr_db = p.min_snr_db + (p.max_snr_db - p.min_snr_db) * torch.rand(batch_size, device=device)
        snr_db = torch.where(torch.rand(batch_size, device=device) < p.p, snr_db, torch.full_like(snr_db, float("inf")))
        noise = torch.randn(waveform.shape, device=device, dtype=waveform.dtype)
        waveform = add_noise_at_snr(waveform, noise, snr_db)
        out = {**batch, "waveform": waveform}
        if "features" in batch:
            out["features"] = self.featurize(waveform)
        return out
