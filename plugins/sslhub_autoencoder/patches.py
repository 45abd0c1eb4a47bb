"""Patches of images, per-sample random patch masks and 2-D sine-cosine positions (for MAE)."""

from __future__ import annotations

import torch
from torch import Tensor


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """``[B, C, H, W] -> [B, N, p*p*C]`` with ``N = (H/p) * (W/p)`` in row-major patch order.

    Each patch is flattened as ``(row, column, channel)``.

    Raises:
        ValueError: ``H`` or ``W`` not divisible by ``patch_size``.
    """
    batch, channels, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"image size {height}x{width} is not divisible by the patch size {patch_size}")
    rows, cols = height // patch_size, width // patch_size
    x = images.reshape(batch, channels, rows, patch_size, cols, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * cols, patch_size * patch_size * channels)


def unpatchify(patches: Tensor, patch_size: int, channels: int, height: int, width: int) -> Tensor:
    """The inverse of :func:`patchify`: ``[B, N, p*p*C] -> [B, C, H, W]``."""
    batch = patches.shape[0]
    rows, cols = height // patch_size, width // patch_size
    x = patches.reshape(batch, rows, cols, patch_size, patch_size, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, height, width)


def random_patch_mask(
    batch: int, patches: int, mask_ratio: float, device: torch.device | str
) -> tuple[Tensor, Tensor, Tensor]:
    """Hide ``round(patches * mask_ratio)`` random patches of each sample (MAE's per-sample shuffle).

    Uses torch's RNG on ``device``.

    Returns:
        ``ids_keep [B, K]`` (visible patch indices, ``K = patches - hidden``),
        ``ids_restore [B, N]`` (position of each patch in the shuffled order, to unshuffle),
        ``mask [B, N]`` bool, True at hidden patches.

    Raises:
        ValueError: a ratio that leaves no visible or no hidden patch.
    """
    hidden = round(patches * mask_ratio)
    if not 0 < hidden < patches:
        raise ValueError(
            f"mask_ratio {mask_ratio} hides {hidden} of {patches} patches; it must hide at least one and keep at least one"
        )
    keep = patches - hidden
    noise = torch.rand(batch, patches, device=device)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    mask = torch.ones(batch, patches, dtype=torch.bool, device=device)
    mask[:, :keep] = False
    mask = mask.gather(1, ids_restore)
    return ids_shuffle[:, :keep], ids_restore, mask


def sincos_positions_2d(rows: int, cols: int, dim: int) -> Tensor:
    """Fixed 2-D sine-cosine position codes ``[rows * cols, dim]`` (half the channels per axis).

    Raises:
        ValueError: ``dim`` not divisible by 4.
    """
    if dim % 4:
        raise ValueError(f"2-D sine-cosine positions need a dimension divisible by 4, got {dim}")
    quarter = dim // 4
    frequencies = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))

    def axis(length: int) -> Tensor:
        angles = torch.arange(length, dtype=torch.float64)[:, None] * frequencies[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # [length, dim / 2]

    y, x = axis(rows), axis(cols)
    codes = torch.cat([y[:, None, :].expand(rows, cols, -1), x[None, :, :].expand(rows, cols, -1)], dim=-1)
    return codes.reshape(rows * cols, dim).float()
