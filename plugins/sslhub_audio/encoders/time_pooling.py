"""How a frame encoder turns its frames ``[B, T', D]`` into the one ``pooled`` vector it is probed by.

The mean over all frames keeps *what* sounds in a clip and drops *when*: a word whose
syllables come in another order, or a digit whose vowel and consonant swap, pools to almost
the same vector. Objectives that predict frames (masked prediction, APC, autoencoders) leave
their knowledge in the frames, so the plain mean tells a probe little more than the pooled
log-mel does. Two read-outs keep more, at a small multiple of the width:

* a temporal pyramid (``pool_levels``): the mean over the whole clip next to the means over
  2, 3, ... equal stretches of it (spatial pyramid pooling, applied to the time axis);
* statistics pooling (``pool_std``): the standard deviation over time beside the mean, as
  x-vector speaker and language embeddings pool frames (and as the suite's raw-input
  baseline pools log-mel bands).

Segments are built from the length at run time (a ``[T', S]`` averaging matrix), so clips of
any length pool, and the pool exports to ONNX with a dynamic time axis.

References:
    - Lazebnik, Schmid and Ponce, "Beyond Bags of Features: Spatial Pyramid Matching", CVPR 2006
    - He et al., "Spatial Pyramid Pooling in Deep Convolutional Networks for Visual
      Recognition", ECCV 2014, https://arxiv.org/abs/1406.4729
    - Snyder et al., "X-Vectors: Robust DNN Embeddings for Speaker Recognition", ICASSP 2018
      (statistics pooling: mean and standard deviation over frames)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field
from torch import Tensor, nn

from sslhub import Params


class TimePoolParams(Params):
    """The read-out parameters a frame encoder's own parameters inherit."""

    pool_levels: list[int] = Field(
        default_factory=lambda: [1],
        min_length=1,
        description="pooled vector: means over 1, 2, ... equal stretches of the clip, concatenated (a temporal "
        "pyramid; [1] is the plain mean over frames); keeps when things sound, which frame objectives learn",
    )
    pool_std: bool = Field(False, description="Append each channel's standard deviation over frames to pooled.")


def segment_weights(length: int | Tensor, levels: Sequence[int], device: torch.device, dtype: torch.dtype) -> Tensor:
    """Averaging matrix ``[T', sum(levels)]``: column ``s`` averages the frames of segment ``s``.

    For level ``L`` frame ``j`` falls in segment ``floor(j * L / T')`` of that level, so the
    ``L`` segments are as equal as ``T'`` allows; a segment with no frame (``T' < L``) averages
    to zero rather than dividing by zero.
    """
    positions = torch.arange(length, device=device, dtype=torch.float32)
    columns = []
    for level in levels:
        segment = torch.floor(positions * level / positions.numel()).clamp(max=level - 1)
        one_hot = (segment[:, None] == torch.arange(level, device=device, dtype=torch.float32)[None, :]).float()
        columns.append(one_hot / one_hot.sum(dim=0, keepdim=True).clamp(min=1.0))
    return torch.cat(columns, dim=1).to(dtype)


class TimePool(nn.Module):
    """Temporal pyramid of frame means, optionally with the standard deviation over all frames.

    Shapes: ``[B, T', D]`` -> ``[B, D * (sum(levels) + std)]``: the level means in the order of
    ``levels`` (level 1 is the global mean), then the standard deviation when ``std``.
    """

    @classmethod
    def from_params(cls, params: TimePoolParams) -> TimePool:
        return cls(params.pool_levels, params.pool_std)

    def __init__(self, levels: Sequence[int] = (1,), std: bool = False):
        super().__init__()
        if not levels or any(int(level) < 1 for level in levels):
            raise ValueError(f"pool_levels must be positive integers, got {list(levels)}")
        self.levels = tuple(int(level) for level in levels)
        self.std = std

    def output_dim(self, channels: int) -> int:
        """Width of the pooled vector for frames of ``channels`` channels."""
        return channels * (sum(self.levels) + int(self.std))

    def forward(self, tokens: Tensor) -> Tensor:
        if self.levels == (1,) and not self.std:
            return tokens.mean(dim=1)
        batch, length, channels = tokens.shape
        weights = segment_weights(length, self.levels, tokens.device, tokens.dtype)  # [T', S]
        means = torch.einsum("btd,ts->bsd", tokens, weights).reshape(batch, -1)
        if not self.std:
            return means
        spread = (tokens.float().var(dim=1, unbiased=False) + 1e-5).sqrt().to(tokens.dtype)
        return torch.cat([means, spread], dim=1)
