"""The bottleneck between encoder features and a decoder: linear, or a Gaussian latent (VAE)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LatentHead(nn.Module):
    """A linear map of each feature vector to a ``latent_dim`` code; Gaussian when variational.

    The map acts on the channel axis: the last axis for ``[B, D]`` vectors and ``[B, N, D]``
    tokens, axis 1 for ``[B, C, h, w]`` spatial maps (``channel_axis=1``).

    Variational: two heads give ``mu`` and ``logvar``; in training the code is the
    reparameterised sample ``mu + exp(logvar / 2) * eps`` (``eps ~ N(0, I)`` from torch's RNG
    on the feature's device), in eval mode it is ``mu``. ``logvar`` is clamped to
    ``[-30, 20]`` so that ``exp`` can neither underflow to a zero variance nor overflow.

    Args:
        in_dim: feature channels.
        latent_dim: code channels.
        variational: Gaussian latent with ``mu``/``logvar`` heads instead of a plain linear code.
        channel_axis: ``-1`` (vectors, tokens) or ``1`` (spatial maps).
    """

    def __init__(self, in_dim: int, latent_dim: int, variational: bool = False, channel_axis: int = -1):
        super().__init__()
        if in_dim <= 0 or latent_dim <= 0:
            raise ValueError(f"in_dim and latent_dim must be positive, got {in_dim} and {latent_dim}")
        if channel_axis not in (1, -1):
            raise ValueError(f"channel_axis must be 1 or -1, got {channel_axis}")
        self.variational = variational
        self.channel_axis = channel_axis
        self.project = nn.Linear(in_dim, 2 * latent_dim if variational else latent_dim)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Returns ``(code, mu, logvar)``; ``mu``/``logvar`` are ``None`` unless variational."""
        moved = self.channel_axis == 1 and features.dim() > 2
        x = features.movedim(1, -1) if moved else features
        x = self.project(x)
        mu = logvar = None
        if self.variational:
            mu, logvar = x.chunk(2, dim=-1)
            logvar = logvar.clamp(-30.0, 20.0)
            x = mu + (0.5 * logvar).exp() * torch.randn_like(mu) if self.training else mu
            if moved:
                mu, logvar = mu.movedim(-1, 1), logvar.movedim(-1, 1)
        return (x.movedim(-1, 1) if moved else x), mu, logvar
