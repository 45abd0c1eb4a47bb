"""Hole masks for image inpainting, one per sample, drawn from torch's RNG on the batch's device.

Every function returns a float mask ``[B, 1, H, W]`` with 1 on the pixels to hide.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

MASK_KINDS = ("central_block", "random_blocks", "random_regions")


def central_block_mask(batch: int, height: int, width: int, fraction: float, device: torch.device) -> Tensor:
    """A centred rectangle covering ``fraction`` of the image (Context Encoders' centre region)."""
    side = math.sqrt(fraction)
    block_h, block_w = max(1, round(height * side)), max(1, round(width * side))
    top, left = (height - block_h) // 2, (width - block_w) // 2
    mask = torch.zeros(batch, 1, height, width, device=device)
    mask[:, :, top : top + block_h, left : left + block_w] = 1.0
    return mask


def random_blocks_mask(
    batch: int, height: int, width: int, fraction: float, num_blocks: int, device: torch.device
) -> Tensor:
    """``num_blocks`` squares per sample at random places, each ``fraction / num_blocks`` of the area.

    Blocks may overlap, so the hidden share is at most ``fraction``.
    """
    side = math.sqrt(fraction / num_blocks)
    block_h, block_w = max(1, round(height * side)), max(1, round(width * side))
    tops = (torch.rand(batch, num_blocks, 1, 1, device=device) * (height - block_h + 1)).floor()
    lefts = (torch.rand(batch, num_blocks, 1, 1, device=device) * (width - block_w + 1)).floor()
    rows = torch.arange(height, device=device).view(1, 1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, 1, width)
    inside = (rows >= tops) & (rows < tops + block_h) & (cols >= lefts) & (cols < lefts + block_w)
    return inside.any(dim=1, keepdim=True).float()


def random_regions_mask(
    batch: int, height: int, width: int, fraction: float, device: torch.device, blob_scale: int = 4
) -> Tensor:
    """Irregular blobs: smooth random noise thresholded so exactly ``fraction`` of each image is hidden.

    Context Encoders cut random object shapes from PASCAL VOC; smoothed noise gives shapes
    of the same flavour without any data.

    Args:
        blob_scale: noise grid is ``blob_scale x blob_scale`` cells before upsampling;
            larger means smaller blobs.
    """
    noise = torch.rand(batch, 1, blob_scale + 1, blob_scale + 1, device=device)
    smooth = F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False).flatten(1)
    smooth = smooth + 1e-6 * torch.rand_like(smooth)  # break ties so the count is exact
    keep = height * width - max(1, round(fraction * height * width))
    threshold = smooth.kthvalue(max(keep, 1), dim=1, keepdim=True).values
    mask = smooth > threshold if keep > 0 else torch.ones_like(smooth, dtype=torch.bool)
    return mask.float().view(batch, 1, height, width)


def make_mask(
    kind: str, batch: int, height: int, width: int, fraction: float, device: torch.device, num_blocks: int = 4
) -> Tensor:
    """Dispatch on ``kind`` (one of :data:`MASK_KINDS`)."""
    if not 0 < fraction < 1:
        raise ValueError(f"mask fraction must be in (0, 1), got {fraction}")
    if kind == "central_block":
        return central_block_mask(batch, height, width, fraction, device)
    if kind == "random_blocks":
        return random_blocks_mask(batch, height, width, fraction, num_blocks, device)
    if kind == "random_regions":
        return random_regions_mask(batch, height, width, fraction, device)
    raise ValueError(f"unknown mask kind {kind!r}; expected one of {', '.join(MASK_KINDS)}")
