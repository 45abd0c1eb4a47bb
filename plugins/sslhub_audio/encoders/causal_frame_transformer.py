"""``causal_frame_transformer``: a log-mel frame transformer in which no frame sees the future.

``features [B, n_mels, T] -> causal conv1d stack (left-padded, stride s_i) -> [B, T', D] ->
+ sinusoidal positions -> transformer with causal self-attention -> tokens [B, T', D]``,
``pooled = mean over frames``. With ``d = frame_rate_divisor = prod(strides)``, encoder frame
``j`` depends only on mel frames ``0 .. j * d``: it can be asked to predict frames after that
(autoregressive objectives such as ``apc``), and it declares the ``causal`` capability.

References:
    - Chung et al., "An Unsupervised Autoregressive Model for Speech Representation Learning",
      Interspeech 2019 (APC uses a unidirectional encoder; a causal transformer plays that part).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from sslhub import BuildContext, Encoder, EncoderOutput, Params
from sslhub_audio.encoders.frame_transformer import sinusoidal_positions


class CausalFrameTransformerParams(Params):
    """Parameters of ``causal_frame_transformer``."""

    d_model: int = Field(128, gt=0, description="Width of frame embeddings and the transformer.")
    num_layers: int = Field(3, ge=1, description="Transformer layers.")
    num_heads: int = Field(4, ge=1, description="Attention heads (must divide d_model).")
    mlp_ratio: float = Field(4.0, gt=0, description="Feed-forward width as a multiple of d_model.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout in attention and feed-forward outputs.")
    strides: list[int] = Field(
        default_factory=lambda: [1], min_length=1, description="Stride of each causal conv1d layer."
    )
    kernel_size: int = Field(3, ge=1, description="Kernel size of the causal convolutions (padded on the left).")

    @model_validator(mode="after")
    def _check(self) -> CausalFrameTransformerParams:
        if self.d_model % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide d_model ({self.d_model})")
        if any(s < 1 for s in self.strides):
            raise ValueError(f"strides must be >= 1, got {self.strides}")
        return self


class CausalConv1d(nn.Conv1d):
    """A 1-D convolution padded only on the left: output ``j`` sees inputs ``<= j * stride``.

    ``[B, C_in, T] -> [B, C_out, ceil(T / stride)]``.
    """

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.kernel_size[0] - 1, 0)))


class CausalTransformerBlock(nn.Module):
    """Pre-norm self-attention + MLP block on ``[B, N, D]`` where position ``i`` attends only to ``<= i``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.num_heads = num_heads
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
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.dropout(self.proj(attended.transpose(1, 2).reshape(batch, length, dim)))
        return x + self.dropout(self.mlp(self.norm2(x)))


class CausalFrameTransformerEncoder(Encoder):
    """Causal log-mel frame transformer; reads ``features [B, n_mels, T]``, gives ``tokens [B, T', D]``."""

    input_names = ("features",)
    provides = frozenset({"pooled", "tokens", "causal"})

    def __init__(self, params: CausalFrameTransformerParams, context: BuildContext | None = None):
        super().__init__()
        info = context.modality.info() if context is not None and context.modality is not None else {}
        if "n_mels" not in info:
            raise ValueError(
                "encoder 'causal_frame_transformer' needs a modality whose info() has 'n_mels' (the audio modality)"
            )
        self.params = params
        self.n_mels = int(info["n_mels"])
        self.feature_dim = params.d_model
        self.frame_rate_divisor = math.prod(params.strides)
        layers: list[nn.Module] = []
        channels = self.n_mels
        for stride in params.strides:
            layers += [CausalConv1d(channels, params.d_model, params.kernel_size, stride=stride), nn.GELU()]
            channels = params.d_model
        self.subsample = nn.Sequential(*layers)
        self.input_norm = nn.LayerNorm(params.d_model)
        self.blocks = nn.ModuleList(
            CausalTransformerBlock(params.d_model, params.num_heads, params.mlp_ratio, params.dropout)
            for _ in range(params.num_layers)
        )
        self.norm = nn.LayerNorm(params.d_model)

    def forward(self, batch: Mapping[str, Tensor]) -> EncoderOutput:
        features = batch["features"]
        if features.dim() != 3 or features.shape[1] != self.n_mels:
            raise ValueError(
                f"causal_frame_transformer expects features [batch, {self.n_mels}, frames], got {tuple(features.shape)}"
            )
        x = self.input_norm(self.subsample(features).transpose(1, 2))
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
        for block in self.blocks:
            x = block(x)
        tokens = self.norm(x)
        return EncoderOutput(pooled=tokens.mean(dim=1), tokens=tokens)
