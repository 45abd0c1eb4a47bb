"""Decoders from encoder features back to the input: images, spectrograms, vectors.

Every decoder returns *raw* values; the objective applies a sigmoid for data in ``[0, 1]``
(so that ``bce`` can use the stable logits form).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from sslhub import ConvDecoder


class ImageDecoder(ConvDecoder):
    """Transposed convolutions from a spatial map ``[B, C_in, h, w]`` to raw image values ``[B, C_out, H, W]``.

    The vision plugin's inpainting decoder without its sigmoid (see
    :class:`sslhub.ConvDecoder` for the layout).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        in_size: tuple[int, int],
        out_size: tuple[int, int],
        width: int = 32,
    ):
        super().__init__(in_channels, out_channels, in_size, out_size, width, sigmoid=False)


class VectorToImageDecoder(nn.Module):
    """A vector ``[B, D]`` -> linear -> ``[B, C0, s, s]`` seed map -> :class:`ImageDecoder` -> image.

    The seed map is ``s = 4`` pixels wide (or the image size, if smaller) with
    ``C0 = 4 * width`` channels.
    """

    def __init__(self, in_dim: int, out_channels: int, out_size: tuple[int, int], width: int = 32):
        super().__init__()
        seed = (min(4, out_size[0]), min(4, out_size[1]))
        self.seed_shape = (4 * width, *seed)
        self.expand = nn.Sequential(nn.Linear(in_dim, math.prod(self.seed_shape)), nn.ReLU(inplace=True))
        self.decoder = ImageDecoder(4 * width, out_channels, seed, out_size, width)

    def forward(self, vector: Tensor) -> Tensor:
        """``[B, D] -> [B, C_out, H, W]`` raw values."""
        return self.decoder(self.expand(vector).view(-1, *self.seed_shape))


class FrameDecoder(nn.Module):
    """Frames ``[B, T', D]`` -> 1-D transposed convolutions along time -> spectrogram ``[B, F, T]``.

    ``ceil(log2(T / T'))`` stride-2 stages (fixed at build from the expected ratio), then a
    linear resize along time to exactly ``T`` (given at call time, so clip length may vary).

    Args:
        in_dim: ``D``.
        out_bins: ``F`` (mel bands).
        upsampling: ratio ``T / T'`` the decoder must cover (``frame_rate_divisor`` of the encoder).
        width: channels of the 1-D convolutions.
    """

    def __init__(self, in_dim: int, out_bins: int, upsampling: float, width: int = 64):
        super().__init__()
        if min(in_dim, out_bins, width) <= 0 or upsampling <= 0:
            raise ValueError(
                f"frame decoder sizes must be positive: in_dim={in_dim}, out_bins={out_bins}, "
                f"upsampling={upsampling}, width={width}"
            )
        stages = max(0, math.ceil(math.log2(upsampling))) if upsampling > 1 else 0
        layers: list[nn.Module] = [nn.Conv1d(in_dim, width, 1), nn.GELU()]
        for _ in range(stages):
            layers += [nn.ConvTranspose1d(width, width, kernel_size=4, stride=2, padding=1), nn.GELU()]
        layers += [nn.Conv1d(width, width, 3, padding=1), nn.GELU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv1d(width, out_bins, 1)

    def forward(self, frames: Tensor, length: int) -> Tensor:
        """``[B, T', D] -> [B, F, length]`` raw values."""
        x = self.head(self.body(frames.transpose(1, 2)))
        if x.shape[-1] != length:
            x = F.interpolate(x, size=length, mode="linear", align_corners=False)
        return x


class VectorToFrameDecoder(nn.Module):
    """A vector ``[B, D]`` -> linear -> ``[B, T0, width]`` seed frames -> :class:`FrameDecoder`.

    ``T0 = ceil(T / 8)``: three doublings recover the frame rate.
    """

    def __init__(self, in_dim: int, out_bins: int, length: int, width: int = 64):
        super().__init__()
        self.seed_frames = max(1, math.ceil(length / 8))
        self.width = width
        self.expand = nn.Sequential(nn.Linear(in_dim, self.seed_frames * width), nn.GELU())
        self.decoder = FrameDecoder(width, out_bins, length / self.seed_frames, width)

    def forward(self, vector: Tensor, length: int) -> Tensor:
        """``[B, D] -> [B, F, length]`` raw values."""
        return self.decoder(self.expand(vector).view(-1, self.seed_frames, self.width), length)


class MLPDecoder(nn.Module):
    """``[B, D] -> hidden layers (GELU) -> [B, D_out]``."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (128,)):
        super().__init__()
        if min(in_dim, out_dim, *hidden) <= 0:
            raise ValueError(f"MLP decoder sizes must be positive: in={in_dim}, out={out_dim}, hidden={list(hidden)}")
        layers: list[nn.Module] = []
        size = in_dim
        for width in hidden:
            layers += [nn.Linear(size, width), nn.GELU()]
            size = width
        layers.append(nn.Linear(size, out_dim))
        self.body = nn.Sequential(*layers)

    def forward(self, vector: Tensor) -> Tensor:
        """``[B, D] -> [B, D_out]`` raw values."""
        return self.body(vector)
