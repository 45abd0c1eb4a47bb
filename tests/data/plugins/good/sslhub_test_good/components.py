"""Components of the well-behaved test plugin: a scaling augmentation and a two-view objective."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from sslhub import Augmentation, Batch, BuildContext, Encoder, Objective, ObjectiveOutput, Params


class ScaleParams(Params):
    low: float = Field(0.5, gt=0, description="smallest per-sample factor")
    high: float = Field(1.5, gt=0, description="largest per-sample factor")


class RandomScale(Augmentation):
    """Multiply every floating-point input by a random per-sample factor in [low, high]."""

    def __init__(self, params: ScaleParams, context: BuildContext):
        super().__init__()
        if params.high < params.low:
            raise ValueError(f"high ({params.high}) must be >= low ({params.low})")
        self.low, self.high = params.low, params.high

    def forward(self, batch: Batch) -> Batch:
        out = dict(batch)
        for key, value in batch.items():
            if value.is_floating_point():
                # one factor per sample, broadcast over the remaining dimensions
                shape = (value.shape[0],) + (1,) * (value.dim() - 1)
                factor = self.low + (self.high - self.low) * torch.rand(shape, device=value.device)
                out[key] = value * factor
        return out


class CosineParams(Params):
    predictor_dim: int = Field(16, gt=0, description="hidden width of the predictor head")


class CosineAgreement(Objective):
    """Negative cosine similarity between a predicted view and the other (stop-gradient) view."""

    num_views = 2

    def __init__(self, params: CosineParams, context: BuildContext):
        super().__init__()
        dim = context.encoder.feature_dim
        self.predictor = nn.Sequential(
            nn.Linear(dim, params.predictor_dim), nn.ReLU(), nn.Linear(params.predictor_dim, dim)
        )

    def forward(self, views: list[Batch], encoder: Encoder) -> ObjectiveOutput:
        first, second = encoder(views[0]).pooled, encoder(views[1]).pooled
        loss = -F.cosine_similarity(self.predictor(first), second.detach(), dim=-1).mean()
        return ObjectiveOutput(loss)
