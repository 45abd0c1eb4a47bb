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

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from sslhub import BuildContext
from sslhub_audio.encoders.frame_transformer import FrameEncoderParams, LogMelFrameEncoder


class CausalFrameTransformerParams(FrameEncoderParams):
    """Parameters of ``causal_frame_transformer``."""

    # Defaults differ from frame_transformer's; any kernel size works, as the padding is all on the left.
    num_layers: int = Field(3, ge=1, description="Transformer layers.")
    strides: list[int] = Field(
        default_factory=lambda: [1], min_length=1, description="Stride of each causal conv1d layer."
    )
    kernel_size: int = Field(3, ge=1, description="Kernel size of the causal convolutions (padded on the left).")


class CausalConv1d(nn.Conv1d):
    """A 1-D convolution padded only on the left: output ``j`` sees inputs ``<= j * stride``.

    ``[B, C_in, T] -> [B, C_out, ceil(T / stride)]``.
    """

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.kernel_size[0] - 1, 0)))


class CausalFrameTransformerEncoder(LogMelFrameEncoder):
    """Causal log-mel frame transformer; reads ``features [B, n_mels, T]``, gives ``tokens [B, T', D]``."""

    provides = frozenset({"pooled", "tokens", "causal"})
    registered_name = "causal_frame_transformer"
    causal_attention = True

    def __init__(self, params: CausalFrameTransformerParams, context: BuildContext | None = None):
        super().__init__(params, context)

    def subsampling_conv(self, in_channels: int, stride: int) -> nn.Conv1d:
        """A left-padded convolution, so no output frame sees a later mel frame."""
        return CausalConv1d(in_channels, self.params.d_model, self.params.kernel_size, stride=stride)
