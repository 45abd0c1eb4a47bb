"""``time_shift``: circularly roll each clip by a random number of whole hops.

Waveform and features roll together (``shift_frames * hop_length`` samples and
``shift_frames`` frames), so no recomputation is needed and both stay aligned up to the
frames at the wrap-around point.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from sslhub import Augmentation, BuildContext, ModalityInfo, Params


class TimeShiftParams(Params):
    """Parameters of ``time_shift``."""

    max_shift: float = Field(0.1, ge=0, description="Largest shift in seconds, either direction.")
    p: float = Field(1.0, ge=0, le=1, description="Probability that a sample is shifted.")


def roll_rows(x: Tensor, shifts: Tensor) -> Tensor:
    """Roll each row of ``x`` along its last axis by its own amount (``torch.roll`` per row).

    Args:
        x: ``[B, ..., L]``.
        shifts: ``[B]`` integer shifts (positive moves content later).

    Returns:
        Tensor shaped like ``x``.
    """
    length = x.shape[-1]
    positions = torch.arange(length, device=x.device)
    index = (positions[None, :] - shifts[:, None]) % length  # [B, L]
    index = index.view(x.shape[0], *([1] * (x.dim() - 2)), length).expand_as(x)
    return torch.gather(x, -1, index)


class TimeShift(Augmentation):
    """Per-sample circular time shift of up to ``max_shift`` seconds, in whole hops."""

    def __init__(self, params: TimeShiftParams, context: BuildContext):
        super().__init__()
        info = context.modality.info() if context.modality is not None else ModalityInfo()
        if info.hop_length is None or info.sample_rate is None:
            raise ValueError("augmentation 'time_shift' needs the audio modality (hop_length and sample_rate)")
        self.params = params
        self.hop_length = int(info.hop_length)
        self.max_frames = int(params.max_shift * info.sample_rate / self.hop_length)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        reference = batch["features"] if "features" in batch else batch["waveform"]
        batch_size, device = reference.shape[0], reference.device
        frames = torch.randint(-self.max_frames, self.max_frames + 1, (batch_size,), device=device)
        frames = torch.where(torch.rand(batch_size, device=device) < self.params.p, frames, torch.zeros_like(frames))
        out = dict(batch)
        if "features" in batch:
            out["features"] = roll_rows(batch["features"], frames)
        if "waveform" in batch:
            out["waveform"] = roll_rows(batch["waveform"], frames * self.hop_length)
        return out
