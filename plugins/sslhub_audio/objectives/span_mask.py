"""Span masks over frames, as in wav2vec 2.0 and HuBERT.

Every frame starts a span with probability ``start_probability``; a span covers ``span``
consecutive frames (spans may overlap and are cut at the end). The expected masked fraction
at frame ``t`` is ``1 - (1 - start_probability) ** min(span, t + 1)`` -- about 49% in the
interior for wav2vec 2.0's ``0.065`` and ``10``. Each row gets at least one span, so every
sample contributes to the loss.

References:
    - Baevski et al., "wav2vec 2.0: A Framework for Self-Supervised Learning of Speech
      Representations", NeurIPS 2020.
    - Hsu et al., "HuBERT: Self-Supervised Speech Representation Learning by Masked
      Prediction of Hidden Units", TASLP 2021.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def span_mask(
    batch_size: int,
    length: int,
    start_probability: float,
    span: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random span mask.

    Args:
        batch_size: rows ``B``.
        length: frames per row ``L`` (>= 1).
        start_probability: probability that a frame starts a span, in ``(0, 1]``.
        span: frames per span (>= 1).
        device: where the mask lives; random numbers come from that device's global RNG
            unless ``generator`` is given (then they are drawn on the generator's device).
        generator: optional generator for reproducible masks (held-out metrics).

    Returns:
        ``[B, L]`` bool, True at masked frames; every row has at least one masked frame.
    """
    if not 0.0 < start_probability <= 1.0:
        raise ValueError(f"start_probability must be in (0, 1], got {start_probability}")
    if span < 1:
        raise ValueError(f"span must be >= 1, got {span}")
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    draw_device = generator.device if generator is not None else device
    starts = torch.rand(batch_size, length, device=draw_device, generator=generator) < start_probability
    # Rows without any start get one, placed so that a whole span fits when possible.
    forced = torch.randint(0, max(1, length - span + 1), (batch_size,), device=draw_device, generator=generator)
    empty = ~starts.any(dim=1)
    positions = torch.arange(length, device=draw_device)
    starts = starts | (empty[:, None] & (positions[None, :] == forced[:, None]))
    # Frame t is masked if any of frames t - span + 1 .. t starts a span: a causal running max.
    padded = F.pad(starts.float()[:, None, :], (span - 1, 0))
    mask = F.max_pool1d(padded, kernel_size=span, stride=1)[:, 0, :] > 0
    return mask.to(device)


def expected_mask_fraction(length: int, start_probability: float, span: int) -> float:
    """Expected fraction of masked frames, ignoring the at-least-one-span rule."""
    keep = 1.0 - start_probability
    return sum(1.0 - keep ** min(span, t + 1) for t in range(length)) / length
