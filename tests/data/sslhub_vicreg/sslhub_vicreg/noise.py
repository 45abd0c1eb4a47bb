"""``feature_noise``: additive Gaussian noise on the floating-point tensors of any batch."""

from __future__ import annotations

import torch
from pydantic import Field

from sslhub import Augmentation, Batch, BuildContext, Params


class FeatureNoiseParams(Params):
    """Parameters of ``feature_noise``."""

    std: float = Field(0.05, ge=0, description="standard deviation of the added noise")
    p: float = Field(1.0, ge=0, le=1, description="probability that a sample gets noise")
    keys: list[str] | None = Field(None, description="batch keys to perturb; default: every floating-point tensor")
    clamp: tuple[float, float] | None = Field(
        None, description="clamp perturbed values to [low, high], e.g. [0, 1] for images"
    )


class FeatureNoise(Augmentation):
    """Add ``N(0, std^2)`` noise to each selected float tensor, to a random ``p`` share of the samples.

    Integer tensors (token ids, labels) are never touched. Shapes and dtypes are kept:
    ``[B, ...] -> [B, ...]``.
    """

    def __init__(self, params: FeatureNoiseParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params = params or FeatureNoiseParams()
        if params.clamp is not None and params.clamp[0] >= params.clamp[1]:
            raise ValueError(f"clamp must be [low, high] with low < high, got {list(params.clamp)}")

    def forward(self, batch: Batch) -> Batch:
        out = dict(batch)
        keys = self.params.keys if self.params.keys is not None else list(batch)
        for key in keys:
            if key not in batch:
                raise KeyError(f"feature_noise: key {key!r} is not in the batch (keys: {sorted(batch)})")
            value = batch[key]
            if not value.is_floating_point():
                continue
            # One draw per sample, broadcast over the other dimensions.
            shape = (value.shape[0],) + (1,) * (value.dim() - 1)
            apply = torch.rand(shape, device=value.device) < self.params.p
            noisy = value + self.params.std * torch.randn_like(value)
            if self.params.clamp is not None:
                noisy = noisy.clamp(*self.params.clamp)
            # Samples left out keep their exact values (not even clamped).
            out[key] = torch.where(apply, noisy, value)
        return out
