"""Mean/std normalisation as the first layer of every image encoder.

The image modality delivers ``[0, 1]`` images and leaves normalisation to the encoder, so
that augmentations work on natural pixel values and the exported ONNX model takes
``[0, 1]`` images directly (its metadata records ``normalization: inside_model``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sslhub import BuildContext, ModalityInfo

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with the constants as (saved, exported) buffers.

    Shapes: ``[B, C, H, W]`` -> ``[B, C, H, W]``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have the same length, got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std values must be > 0, got {list(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def image_facts(context: BuildContext | None) -> tuple[int, int, tuple[float, ...], tuple[float, ...]]:
    """Channels, image size, mean and std from the modality (ImageNet defaults without one)."""
    info = context.modality.info() if context is not None and context.modality is not None else ModalityInfo()
    channels = int(info.channels or 3)
    image_size = int(info.image_size or 32)
    gray = (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)
    mean = tuple(info.mean if info.mean is not None else IMAGENET_MEAN if channels == 3 else gray[0])
    std = tuple(info.std if info.std is not None else IMAGENET_STD if channels == 3 else gray[1])
    return channels, image_size, mean, std
