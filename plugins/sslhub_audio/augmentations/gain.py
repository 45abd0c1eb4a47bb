"""``random_gain``: scale each waveform by a random gain in dB, then recompute the features.

With ``features.normalize: utterance`` a constant gain is divided out again by the
normalisation (it only moves the log floor in near-silent frames), so this matters for
``normalize: none`` and for waveform encoders (``wav2vec2``/``hubert``).
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import Tensor

from sslhub import Augmentation, BuildContext, Params
from sslhub_audio.augmentations._common import check_key, featurizer_from


class RandomGainParams(Params):
    """Parameters of ``random_gain``."""

    min_db: float = Field(-6.0, description="Smallest gain in dB.")
    max_db: float = Field(6.0, description="Largest gain in dB.")
    p: float = Field(1.0, ge=0, le=1, description="Probability that a sample is scaled.")

    @model_validator(mode="after")
    def _ordered(self) -> RandomGainParams:
        if self.min_db > self.max_db:
            raise ValueError(f"min_db ({self.min_db}) must be <= max_db ({self.max_db})")
        return self


class RandomGain(Augmentation):
    """Per-sample gain ``waveform * 10 ** (g / 20)``, ``g ~ U(min_db, max_db)``; features recomputed."""

    def __init__(self, params: RandomGainParams, context: BuildContext):
        super().__init__()
        self.params = params
        self.featurize = featurizer_from(context, "random_gain")

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        waveform = check_key(batch, "waveform", "random_gain")
        p = self.params
        batch_size = waveform.shape[0]
        gain_db = p.min_db + (p.max_db - p.min_db) * torch.rand(batch_size, device=waveform.device)
        gain_db = torch.where(torch.rand(batch_size, device=waveform.device) < p.p, gain_db, torch.zeros_like(gain_db))
        waveform = waveform * torch.pow(10.0, gain_db / 20.0)[:, None]
        out = {**batch, "waveform": waveform}
        if "features" in batch:
            out["features"] = self.featurize(waveform)
        return out
