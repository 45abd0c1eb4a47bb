"""Batched image operations with one parameter per sample.

Every function takes float images ``x: [B, C, H, W]`` in ``[0, 1]`` and per-sample
parameters of shape ``[B]``, and follows the formulas of ``torchvision.transforms.v2.functional``
(same grayscale weights, same HSV round trip, same clamping), so a batched call equals
torchvision applied sample by sample with the same parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: ITU-R 601-2 luma weights, as in torchvision's rgb_to_grayscale.
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def _per_sample(values: Tensor) -> Tensor:
    """``[B]`` -> ``[B, 1, 1, 1]`` for broadcasting against images."""
    return values.view(-1, 1, 1, 1)


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """``[B, 3, H, W]`` -> luma ``[B, 1, H, W]``; one-channel input is returned as is."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def blend(a: Tensor, b: Tensor, ratio: Tensor) -> Tensor:
    """``clamp(ratio * a + (1 - ratio) * b, 0, 1)`` with ``ratio: [B]``."""
    ratio = _per_sample(ratio)
    return (ratio * a + (1.0 - ratio) * b).clamp(0.0, 1.0)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Multiply by ``factor: [B]`` (0 gives black, 1 the original)."""
    return (x * _per_sample(factor)).clamp(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the mean gray level of each image (0 gives flat gray, 1 the original)."""
    mean = rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    return blend(x, mean, factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the grayscale image (0 gives gray, 1 the original); no-op on one channel."""
    if x.shape[1] == 1:
        return x
    return blend(x, rgb_to_grayscale(x), factor)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """``[B, 3, H, W]`` RGB in ``[0, 1]`` -> HSV, each channel in ``[0, 1]``."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc = x.min(dim=1).values
    equal = maxc == minc
    chroma = maxc - minc
    # where max == min, hue and saturation are 0; the ones_like avoids 0/0.
    saturation = chroma / torch.where(equal, torch.ones_like(maxc), maxc)
    chroma_safe = torch.where(equal, torch.ones_like(chroma), chroma)
    rc = (maxc - r) / chroma_safe
    gc = (maxc - g) / chroma_safe
    bc = (maxc - b) / chroma_safe
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    hue = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((hue, saturation, maxc), dim=1)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = x.unbind(1)
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    # sector i of the hue circle picks which of (v, q, p, t) goes to r, g, b
    table_r = torch.stack((v, q, p, p, t, v), dim=1)
    table_g = torch.stack((t, v, v, q, p, p), dim=1)
    table_b = torch.stack((p, p, t, v, v, q), dim=1)
    index = i.unsqueeze(1)
    r = table_r.gather(1, index)
    g = table_g.gather(1, index)
    b = table_b.gather(1, index)
    return torch.cat((r, g, b), dim=1)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate hue by ``shift: [B]`` in ``[-0.5, 0.5]`` (fraction of the colour circle); no-op on one channel."""
    if x.shape[1] == 1:
        return x
    hsv = rgb_to_hsv(x)
    hue = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack((hue, hsv[:, 1], hsv[:, 2]), dim=1))


def solarize(x: Tensor, threshold: float) -> Tensor:
    """Invert pixels at or above ``threshold``."""
    return torch.where(x >= threshold, 1.0 - x, x)


def gaussian_kernels(kernel_size: int, sigma: Tensor) -> Tensor:
    """Normalised 1-D Gaussian kernels, one per sample.

    Args:
        kernel_size: odd length K.
        sigma: ``[B]`` standard deviations in pixels.

    Returns:
        ``[B, K]`` kernels summing to 1 (torchvision's ``_get_gaussian_kernel1d``).
    """
    half = (kernel_size - 1) / 2.0
    positions = torch.linspace(-half, half, kernel_size, device=sigma.device, dtype=sigma.dtype)
    weights = torch.exp(-0.5 * (positions[None, :] / sigma[:, None]) ** 2)
    return weights / weights.sum(dim=1, keepdim=True)


def gaussian_blur(x: Tensor, kernel_size: int, sigma: Tensor) -> Tensor:
    """Blur each image with its own sigma: a separable grouped convolution, reflect padding.

    Args:
        x: ``[B, C, H, W]``.
        kernel_size: odd K, smaller than twice the image side (reflect padding needs it).
        sigma: ``[B]``.

    Returns:
        ``[B, C, H, W]``.
    """
    batch, channels, height, width = x.shape
    kernels = gaussian_kernels(kernel_size, sigma.to(x.dtype))  # [B, K]
    # one group per (sample, channel): the batch is folded into the channel axis.
    kernels = kernels.repeat_interleave(channels, dim=0)  # [B*C, K]
    pad = kernel_size // 2
    folded = x.reshape(1, batch * channels, height, width)
    folded = F.pad(folded, (pad, pad, pad, pad), mode="reflect")
    folded = F.conv2d(folded, kernels.view(-1, 1, 1, kernel_size), groups=batch * channels)
    folded = F.conv2d(folded, kernels.view(-1, 1, kernel_size, 1), groups=batch * channels)
    return folded.view(batch, channels, height, width)
