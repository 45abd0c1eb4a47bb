"""The optional projection head the sentence-contrastive objectives (simcse, split_contrastive) share."""

from __future__ import annotations

from torch import nn


def projection_head(dim: int, projection_dim: int) -> nn.Module:
    """Linear-Tanh-Linear from the pooled width ``dim`` to ``projection_dim``; identity when it is 0."""
    if not projection_dim:
        return nn.Identity()
    return nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, projection_dim))
