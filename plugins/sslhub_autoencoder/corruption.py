"""Input corruption of denoising autoencoders, batched on the input's device.

References:
    - Vincent et al., "Extracting and Composing Robust Features with Denoising Autoencoders",
      ICML 2008 (masking noise), https://doi.org/10.1145/1390156.1390294
"""

from __future__ import annotations

import torch
from torch import Tensor

NOISE_KINDS = ("gaussian", "dropout")


def corrupt(x: Tensor, noise: str, level: float, value_range: tuple[float, float] | None = None) -> Tensor:
    """A corrupted copy of ``x`` (``x`` itself is not modified).

    Args:
        x: ``[B, ...]`` float input.
        noise: ``gaussian`` adds ``N(0, level**2)`` to every element; ``dropout`` (masking
            noise) sets each element to 0 with probability ``level`` (0 is the mean of
            standardised data and black for images), without rescaling the rest.
        level: noise standard deviation in data units (``gaussian``) or drop probability (``dropout``).
        value_range: ``(low, high)`` the result is clamped to (``(0, 1)`` for images), or ``None``.

    Returns:
        ``[B, ...]`` the corrupted input, same dtype.

    Raises:
        ValueError: unknown ``noise`` or a level out of range.
    """
    if noise not in NOISE_KINDS:
        raise ValueError(f"unknown noise {noise!r}; choose one of {', '.join(NOISE_KINDS)}")
    if level < 0 or (noise == "dropout" and level >= 1):
        raise ValueError(
            f"noise_level for {noise} noise must be in [0, {'1)' if noise == 'dropout' else 'inf)'}, got {level}"
        )
    if noise == "gaussian":
        out = x + level * torch.randn_like(x)
    else:
        keep = torch.rand_like(x, dtype=torch.float32) >= level
        out = x * keep.to(x.dtype)
    if value_range is not None:
        out = out.clamp(value_range[0], value_range[1])
    return out
