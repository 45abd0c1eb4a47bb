"""Input corruption of denoising autoencoders, batched on the input's device.

References:
    - Vincent et al., "Extracting and Composing Robust Features with Denoising Autoencoders",
      ICML 2008 (masking noise), https://doi.org/10.1145/1390156.1390294
    - Jahrer, "Porto Seguro's Safe Driver Prediction", 1st place solution, Kaggle 2017 (swap
      noise for denoising autoencoders of tables)
    - Yoon et al., "VIME: Extending the Success of Self- and Semi-supervised Learning to Tabular
      Domain", NeurIPS 2020 (predicting which cells were corrupted)
"""

from __future__ import annotations

import torch
from torch import Tensor

NOISE_KINDS = ("gaussian", "dropout", "swap")


def swap_columns(rows: Tensor, rate: float) -> Tensor:
    """:func:`swap_columns_with_mask` without the mask."""
    return swap_columns_with_mask(rows, rate)[0]


def swap_columns_with_mask(rows: Tensor, rate: float) -> tuple[Tensor, Tensor]:
    """Replace a ``rate`` share of each row's columns by the same column of a random other row.

    A swapped value is a draw from that column's empirical marginal in the batch, so it is
    always a plausible value of its column (unlike a 0 or added noise on a skewed column).

    Args:
        rows: ``[B, D]`` float.
        rate: expected share of replaced entries per row.

    Returns:
        ``[B, D]``: each entry kept, or taken from row ``j`` (drawn uniformly per entry) of
        the same column; and the ``[B, D]`` bool mask of the entries that were replaced. Every
        operation stays on the device (no host sync).
    """
    batch_size, width = rows.shape
    donors = torch.randint(batch_size, (batch_size, width), device=rows.device)
    marginal = rows.gather(0, donors)
    replace = torch.rand(batch_size, width, device=rows.device) < rate
    return torch.where(replace, marginal, rows), replace


def corrupt(x: Tensor, noise: str, level: float, value_range: tuple[float, float] | None = None) -> Tensor:
    """:func:`corrupt_with_mask` without the mask."""
    return corrupt_with_mask(x, noise, level, value_range)[0]


def corrupt_with_mask(
    x: Tensor, noise: str, level: float, value_range: tuple[float, float] | None = None
) -> tuple[Tensor, Tensor | None]:
    """A corrupted copy of ``x`` (``x`` itself is not modified) and which elements were corrupted.

    Args:
        x: ``[B, ...]`` float input.
        noise: ``gaussian`` adds ``N(0, level**2)`` to every element; ``dropout`` (masking
            noise) sets each element to 0 with probability ``level`` (0 is the mean of
            standardised data and black for images), without rescaling the rest; ``swap``
            (tables, ``x`` of shape ``[B, D]``) replaces each element with probability
            ``level`` by the same column of a random row of the batch (:func:`swap_columns`).
        level: noise standard deviation in data units (``gaussian``) or the probability of
            dropping (``dropout``) or swapping (``swap``) an element.
        value_range: ``(low, high)`` the result is clamped to (``(0, 1)`` for images), or ``None``.

    Returns:
        ``[B, ...]`` the corrupted input, same dtype; and for ``dropout`` and ``swap`` the bool
        mask of the elements that were dropped or swapped (``None`` for ``gaussian``, which
        touches every element).

    Raises:
        ValueError: unknown ``noise`` or a level out of range.
    """
    if noise not in NOISE_KINDS:
        raise ValueError(f"unknown noise {noise!r}; choose one of {', '.join(NOISE_KINDS)}")
    probability = noise in ("dropout", "swap")
    if level < 0 or (probability and level >= 1):
        raise ValueError(f"noise_level for {noise} noise must be in [0, {'1)' if probability else 'inf)'}, got {level}")
    if noise == "swap" and x.dim() != 2:
        raise ValueError(f"swap noise needs table rows [batch, columns], got shape {tuple(x.shape)}")
    mask: Tensor | None = None
    if noise == "gaussian":
        out = x + level * torch.randn_like(x)
    elif noise == "swap":
        out, mask = swap_columns_with_mask(x, level)
    else:
        mask = torch.rand_like(x, dtype=torch.float32) < level
        out = x * (~mask).to(x.dtype)
    if value_range is not None:
        out = out.clamp(value_range[0], value_range[1])
    return out, mask
