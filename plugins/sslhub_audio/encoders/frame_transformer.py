"""``frame_transformer``: convolutional subsampling of log-mel frames + a pre-norm transformer.

``features [B, n_mels, T] -> conv1d stack (stride s_i each) -> [B, T', D] -> + sinusoidal
positions -> transformer -> tokens [B, T', D]``, ``pooled = mean over frames``.
``T' = ceil(T / frame_rate_divisor)`` with ``frame_rate_divisor = prod(strides)``: encoder frame
``j`` sees mel frames ``[j * divisor, (j + 1) * divisor)`` at its centre.

:meth:`FrameTransformerEncoder.forward_frames` lets masked-prediction objectives replace
frame embeddings by a learned mask embedding *before* the transformer (wav2vec 2.0 / HuBERT
style); ``embed_frames`` and ``transform_frames`` give the two halves separately (the
``frame_masking`` capability, see :mod:`sslhub_audio.encoders.frame_masking`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from sslhub import BuildContext, Encoder, EncoderOutput, ModalityInfo
from sslhub_audio.encoders.frame_masking import check_layer, replace_masked_frames
from sslhub_audio.encoders.time_pooling import TimePool, TimePoolParams


class FrameEncoderParams(TimePoolParams):
    """Parameters both log-mel frame transformers take (``frame_transformer``, ``causal_frame_transformer``)."""

    d_model: int = Field(128, gt=0, description="Width of frame embeddings and the transformer.")
    num_layers: int = Field(4, ge=1, description="Transformer layers.")
    num_heads: int = Field(4, ge=1, description="Attention heads (must divide d_model).")
    mlp_ratio: float = Field(4.0, gt=0, description="Feed-forward width as a multiple of d_model.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout in attention and feed-forward outputs.")
    strides: list[int] = Field(
        default_factory=lambda: [2, 2], min_length=1, description="Stride of each conv1d subsampling layer."
    )
    kernel_size: int = Field(3, ge=1, description="Kernel size of the (odd-padded) subsampling convolutions.")

    @model_validator(mode="after")
    def _check_heads_and_strides(self) -> FrameEncoderParams:
        if self.d_model % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide d_model ({self.d_model})")
        if any(s < 1 for s in self.strides):
            raise ValueError(f"strides must be >= 1, got {self.strides}")
        return self


class FrameTransformerParams(FrameEncoderParams):
    """Parameters of ``frame_transformer``."""

    @model_validator(mode="after")
    def _check_odd_kernel(self) -> FrameTransformerParams:
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (so T' = ceil(T / divisor)), got {self.kernel_size}")
        return self


def sinusoidal_positions(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Transformer sine/cosine position codes ``[length, dim]`` (Vaswani et al., 2017)."""
    positions = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    half = dim // 2
    frequencies = torch.exp(
        torch.arange(half, device=device, dtype=torch.float32) * (-math.log(10000.0) / max(half, 1))
    )
    angles = positions * frequencies[None, :]
    codes = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        codes = F.pad(codes, (0, 1))
    return codes.to(dtype)


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + MLP block on ``[B, N, D]`` (uses scaled_dot_product_attention).

    With ``causal=True`` position ``i`` attends only to positions ``<= i``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float, causal: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.causal = causal
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, N, head_dim]
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        attended = attended.transpose(1, 2).reshape(batch, length, dim)
        x = x + self.dropout(self.proj(attended))
        return x + self.dropout(self.mlp(self.norm2(x)))


class LogMelFrameEncoder(Encoder):
    """What the log-mel frame transformers share: conv subsampling, positions, transformer, pooling.

    ``features [B, n_mels, T] -> conv1d stack -> [B, T', D] -> + positions -> transformer ->
    tokens [B, T', D]``, ``pooled [B, feature_dim]`` (``feature_dim = D`` for the plain mean;
    ``token_dim = D`` always, what frame-level heads size themselves by). A subclass names itself (``registered_name``, for
    messages), chooses the subsampling convolution (:meth:`subsampling_conv`) and whether the
    attention is causal (``causal_attention``).
    """

    input_names = ("features",)
    registered_name: ClassVar[str]
    causal_attention: ClassVar[bool] = False

    def __init__(self, params: FrameEncoderParams, context: BuildContext | None = None):
        super().__init__()
        info = context.modality.info() if context is not None and context.modality is not None else ModalityInfo()
        if info.n_mels is None:
            raise ValueError(
                f"encoder '{self.registered_name}' needs a modality whose info() has 'n_mels' (the audio modality)"
            )
        self.params = params
        self.n_mels = int(info.n_mels)
        self.token_dim = params.d_model
        self.pool = TimePool.from_params(params)
        self.feature_dim = self.pool.output_dim(params.d_model)
        self.frame_rate_divisor = math.prod(params.strides)
        layers: list[nn.Module] = []
        channels = self.n_mels
        for stride in params.strides:
            layers += [self.subsampling_conv(channels, stride), nn.GELU()]
            channels = params.d_model
        self.subsample = nn.Sequential(*layers)
        self.input_norm = nn.LayerNorm(params.d_model)
        self.blocks = nn.ModuleList(
            TransformerBlock(params.d_model, params.num_heads, params.mlp_ratio, params.dropout, self.causal_attention)
            for _ in range(params.num_layers)
        )
        self.norm = nn.LayerNorm(params.d_model)

    def subsampling_conv(self, in_channels: int, stride: int) -> nn.Conv1d:
        """One subsampling convolution ``[B, in_channels, T] -> [B, d_model, ceil(T / stride)]``."""
        raise NotImplementedError

    def embed_frames(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Subsampled frame embeddings before the transformer: ``[B, T', D]``."""
        features = batch["features"]
        if features.dim() != 3 or features.shape[1] != self.n_mels:
            raise ValueError(
                f"{self.registered_name} expects features [batch, {self.n_mels}, frames], got {tuple(features.shape)}"
            )
        return self.input_norm(self.subsample(features).transpose(1, 2))

    def transform_frames(self, x: Tensor) -> EncoderOutput:
        """Add positions to frame embeddings ``[B, T', D]`` and run the transformer.

        Returns:
            :class:`EncoderOutput` with ``tokens [B, T', D]`` and ``pooled [B, feature_dim]`` (the
            mean of frames, or the :class:`TimePool` read-out the parameters choose).
        """
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
        for block in self.blocks:
            x = block(x)
        tokens = self.norm(x)
        return EncoderOutput(pooled=self.pool(tokens), tokens=tokens)

    def forward(self, batch: Mapping[str, Tensor]) -> EncoderOutput:
        return self.transform_frames(self.embed_frames(batch))

    @property
    def num_context_layers(self) -> int:
        return len(self.blocks)

    def hidden_frames(self, batch: Mapping[str, Tensor], layer: int) -> Tensor:
        """The frames after transformer block ``layer`` (1 = the first): ``[B, T', D]``."""
        check_layer(layer, self.num_context_layers, self.registered_name)
        x = self.embed_frames(batch)
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
        for block in self.blocks[:layer]:
            x = block(x)
        return x


class FrameTransformerEncoder(LogMelFrameEncoder):
    """Log-mel frame transformer: conv subsampling + transformer; pooled = mean of frames.

    Reads ``batch["features"]`` ``[B, n_mels, T]``; returns ``tokens [B, T', D]`` and
    ``pooled [B, D]``.
    """

    provides = frozenset({"pooled", "tokens", "frame_masking", "frame_layers"})
    registered_name = "frame_transformer"

    def __init__(self, params: FrameTransformerParams, context: BuildContext | None = None):
        super().__init__(params, context)

    def subsampling_conv(self, in_channels: int, stride: int) -> nn.Conv1d:
        """A centred convolution (odd kernel, padding ``k // 2``)."""
        kernel_size = self.params.kernel_size
        return nn.Conv1d(in_channels, self.params.d_model, kernel_size, stride=stride, padding=kernel_size // 2)

    def num_frames(self, mel_frames: int) -> int:
        """Encoder frames ``T'`` for ``mel_frames`` input frames."""
        length = mel_frames
        for stride in self.params.strides:
            length = (length - 1) // stride + 1  # conv with padding k // 2 and odd k
        return length

    def count_frames(self, batch: Mapping[str, Tensor]) -> int:
        """Encoder frames ``T'`` this batch yields (objectives size frame masks with it)."""
        return self.num_frames(batch["features"].shape[-1])

    def forward_frames(
        self, batch: Mapping[str, Tensor], frame_mask: Tensor | None = None, mask_embedding: Tensor | None = None
    ) -> EncoderOutput:
        """Encode, replacing the embeddings of masked frames before the transformer.

        Args:
            batch: holds ``features`` ``[B, n_mels, T]``.
            frame_mask: ``[B, T']`` bool, True where the frame embedding is replaced; ``None`` for none.
            mask_embedding: ``[D]`` learned vector put at masked frames (required with ``frame_mask``).

        Returns:
            :class:`EncoderOutput` with ``tokens [B, T', D]`` and ``pooled [B, D]``.
        """
        x = replace_masked_frames(self.embed_frames(batch), frame_mask, mask_embedding)
        return self.transform_frames(x)
