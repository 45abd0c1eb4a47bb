"""How an image encoder turns its last feature map into the one ``pooled`` vector it is probed by.

A global average (``avg``) keeps *what* is in the image and throws away *where*. That suits
an invariance objective (SimCLR pulls crops of one image together, so its last map is already
position-free), but an encoder trained to reconstruct pixels (inpainting, MAE, autoencoders)
keeps its knowledge in the layout of the map: averaged, it tells a linear probe little more
than the mean brightness of the image, and falls below the raw pixels. A spatial pyramid
(``pyramid``: the global average next to the averages over a 2x2, 4x4, ... grid of cells)
keeps a coarse layout at a small multiple of the width.

References:
    - Lazebnik, Schmid and Ponce, "Beyond Bags of Features: Spatial Pyramid Matching", CVPR 2006
    - He et al., "Spatial Pyramid Pooling in Deep Convolutional Networks for Visual
      Recognition", ECCV 2014, https://arxiv.org/abs/1406.4729
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PoolName = Literal["avg", "pyramid"]


def check_pyramid(levels: Sequence[int], height: int, width: int, where: str) -> None:
    """Every level must split the ``height x width`` map into equal cells (what ONNX export needs).

    Raises:
        ValueError: naming the level, the map size and ``where`` (the encoder).
    """
    for level in levels:
        if height % level or width % level:
            raise ValueError(
                f"{where}: pyramid level {level} does not divide the {height}x{width} feature map into equal "
                f"cells; choose levels among the divisors of {height} (for example [1, 2])"
            )


class SpatialPyramidPool(nn.Module):
    """Concatenated average pools of a feature map over ``level x level`` grids of cells.

    Level 1 is the global average. Cells are equal (the levels divide the map; see
    :func:`check_pyramid`), so the pool is a plain strided average and exports to ONNX.

    Shapes: ``[B, D, h, w]`` -> ``[B, D * sum(level**2 for level in levels)]``.
    """

    def __init__(self, levels: Sequence[int]):
        super().__init__()
        if not levels or any(level < 1 for level in levels):
            raise ValueError(f"pyramid levels must be positive integers, got {list(levels)}")
        self.levels = tuple(int(level) for level in levels)

    def output_dim(self, channels: int) -> int:
        """Width of the pooled vector for a map of ``channels`` channels."""
        return channels * sum(level**2 for level in self.levels)

    def forward(self, feature_map: Tensor) -> Tensor:
        height, width = feature_map.shape[-2:]
        parts = []
        for level in self.levels:
            kernel = (height // level, width // level)
            parts.append(F.avg_pool2d(feature_map, kernel, stride=kernel).flatten(1))
        return torch.cat(parts, dim=1)


class GlobalAveragePool(nn.Module):
    """The mean over all positions, for maps of any size. Shapes: ``[B, D, h, w]`` -> ``[B, D]``."""

    def output_dim(self, channels: int) -> int:
        """Width of the pooled vector for a map of ``channels`` channels."""
        return channels

    def forward(self, feature_map: Tensor) -> Tensor:
        return feature_map.mean(dim=(-2, -1))


def build_pool(name: PoolName, levels: Sequence[int]) -> GlobalAveragePool | SpatialPyramidPool:
    """``avg``: a :class:`GlobalAveragePool`; ``pyramid``: a :class:`SpatialPyramidPool` over ``levels``."""
    if name == "avg":
        return GlobalAveragePool()
    return SpatialPyramidPool(levels)
