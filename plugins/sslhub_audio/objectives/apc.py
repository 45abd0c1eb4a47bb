"""``apc``: Autoregressive Predictive Coding -- predict the log-mel frame ``n`` steps ahead.

A causal encoder reads log-mel frames ``[B, n_mels, T]`` and gives one vector per encoder
frame (``tokens [B, T', D]``, ``T' = ceil(T / d)`` with ``d`` the encoder's
``frame_rate_divisor``); a linear head maps the vector of encoder frame ``j`` to the ``d``
mel frames of encoder frame ``j + n`` (stacked, ``n_mels * d`` values), and the loss is their
mean absolute error (L1) over the ``T' - n`` frames that have a future::

    loss = mean_{b, j < T' - n} | head(h_{b, j}) - x_{b, j + n} |

Predicting ``n = 3`` steps ahead rather than the next frame keeps the model from
extrapolating local smoothness. The encoder must be causal (declared with
``provides=["causal"]``; ``sslhub validate`` refuses others): a bidirectional one could read
the frame it is asked for. The metrics show ``l1`` beside ``copy_l1``, the error of
predicting frame ``j + n`` as a copy of frame ``j``, the trivial baseline to beat.

References:
    - Chung, Hsu, Tang and Glass, "An Unsupervised Autoregressive Model for Speech
      Representation Learning", Interspeech 2019, https://arxiv.org/abs/1904.03240
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from sslhub import Batch, BuildContext, Encoder, Objective, ObjectiveOutput, Params
from sslhub_audio.encoders.frame_masking import frame_width


class APCParams(Params):
    """Parameters of ``apc``."""

    steps_ahead: int = Field(3, ge=1, description="n: predict the encoder frame this many frames ahead.")


def stack_frames(features: Tensor, divisor: int, num_frames: int) -> Tensor:
    """The ``divisor`` mel frames under each encoder frame, stacked: ``[B, n_mels, T] -> [B, T', n_mels * divisor]``.

    The spectrogram is zero-padded on the right to ``num_frames * divisor`` frames (or cut).
    """
    batch, bins, length = features.shape
    total = num_frames * divisor
    padded = F.pad(features, (0, total - length)) if total > length else features[..., :total]
    return padded.reshape(batch, bins, num_frames, divisor).permute(0, 2, 1, 3).reshape(batch, num_frames, -1)


def apc_loss(predictions: Tensor, frames: Tensor, steps_ahead: int) -> Tensor:
    """L1 between the prediction at frame ``j`` and the frame ``j + steps_ahead``.

    Args:
        predictions: ``[B, T', F]`` made from encoder frames ``0 .. T'-1``.
        frames: ``[B, T', F]`` targets (the stacked mel frames of each encoder frame).
        steps_ahead: ``n >= 1``; must be below ``T'``.

    Returns:
        0-d mean absolute error over the ``B * (T' - n) * F`` predicted values.
    """
    if steps_ahead < 1 or steps_ahead >= frames.shape[1]:
        raise ValueError(f"steps_ahead must be in [1, {frames.shape[1] - 1}] for {frames.shape[1]} frames")
    if predictions.shape != frames.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and frames {tuple(frames.shape)} differ")
    return (predictions[:, :-steps_ahead] - frames[:, steps_ahead:]).abs().mean()


class APCObjective(Objective):
    """APC: a causal encoder's frame ``j`` predicts log-mel frame ``j + n`` (L1)."""

    num_views = 1

    def __init__(self, params: APCParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params = params or APCParams()
        encoder = context.encoder if context is not None else None
        if not isinstance(encoder, Encoder) or context is None or context.modality is None:
            raise ValueError("apc needs one built encoder and the audio modality (context.encoder, context.modality)")
        if "causal" not in encoder.provides:
            raise ValueError(f"apc needs a causal encoder; {type(encoder).__name__} does not declare provides 'causal'")
        n_mels = context.modality.info().n_mels
        if n_mels is None:
            raise ValueError("apc predicts log-mel frames: the modality's info() has no 'n_mels'")
        self.divisor = int(getattr(encoder, "frame_rate_divisor", 1))
        self.head = nn.Linear(frame_width(encoder), int(n_mels) * self.divisor)  # the head reads frames

    def predict(self, batch: Batch, encoder: Encoder) -> tuple[Tensor, Tensor]:
        """``(predictions, frames)``, both ``[B, T', n_mels * d]``: what each frame predicts, what each frame is."""
        features = batch["features"]
        tokens = encoder(batch).tokens
        if tokens is None:
            raise ValueError("apc needs the encoder's tokens (one vector per frame), and it returned none")
        if math.ceil(features.shape[-1] / self.divisor) != tokens.shape[1]:
            raise ValueError(
                f"encoder gave {tokens.shape[1]} frames for {features.shape[-1]} mel frames, "
                f"expected ceil(T / {self.divisor})"
            )
        frames = stack_frames(features.float(), self.divisor, tokens.shape[1])
        return self.head(tokens).float(), frames

    def forward(self, views: list[Batch], encoder: Encoder) -> ObjectiveOutput:
        if len(views) != 1:
            raise ValueError(f"apc needs 1 view, got {len(views)}")
        predictions, frames = self.predict(views[0], encoder)
        n = self.params.steps_ahead
        loss = apc_loss(predictions, frames, n)
        with torch.no_grad():
            copy = (frames[:, :-n] - frames[:, n:]).abs().mean()
        return ObjectiveOutput(loss=loss, metrics={"l1": loss.detach(), "copy_l1": copy})

    @torch.no_grad()
    def held_out_metrics(self, batch: Batch, encoder: Encoder) -> dict[str, float]:
        """Held-out ``l1`` of the n-ahead prediction and ``copy_l1``, the copy-the-present baseline."""
        predictions, frames = self.predict(batch, encoder)
        n = self.params.steps_ahead
        return {
            "l1": float(apc_loss(predictions, frames, n)),
            "copy_l1": float((frames[:, :-n] - frames[:, n:]).abs().mean()),
        }
