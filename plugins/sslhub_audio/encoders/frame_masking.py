"""Putting a learned mask embedding in place of masked frame features (the ``frame_masking`` capability).

An encoder that declares ``provides=["frame_masking"]`` splits its forward pass in two:
``embed_frames(batch) -> [B, T', D]`` (local features, before the context network) and
``transform_frames(frames) -> EncoderOutput`` (the context network), and counts its frames
with ``count_frames(batch)``. Masked-prediction objectives replace some local features with a
mask embedding between the two (``masked_audio``), or also keep the unmasked ones as targets
(``wav2vec2``).

An encoder that declares ``frame_layers`` also gives the frames after any one of its
``num_context_layers`` context-network layers with ``hidden_frames(batch, layer)``: what
HuBERT's second iteration clusters.

References:
    - Baevski et al., "wav2vec 2.0", NeurIPS 2020, section 3.1 (masking the latent features).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sslhub import Encoder


def frame_width(encoder: Encoder) -> int:
    """Channels of the encoder's frames, what a frame-level head or mask embedding is sized by: its
    ``token_dim`` where its pooled vector is wider than a frame (a pyramid or statistics read-out),
    else its ``feature_dim``."""
    return int(getattr(encoder, "token_dim", encoder.feature_dim))


def replace_masked_frames(frames: Tensor, frame_mask: Tensor | None, mask_embedding: Tensor | None) -> Tensor:
    """``frames`` with ``mask_embedding`` at every masked frame.

    Args:
        frames: ``[B, T', D]`` local frame features.
        frame_mask: ``[B, T']`` bool, True where the frame is replaced; ``None`` leaves ``frames`` as they are.
        mask_embedding: ``[D]``, required with ``frame_mask``.

    Returns:
        ``[B, T', D]``.
    """
    if frame_mask is None:
        return frames
    if mask_embedding is None:
        raise ValueError("forward_frames got a frame_mask without a mask_embedding")
    if frame_mask.shape != frames.shape[:2]:
        raise ValueError(f"frame_mask must be [batch, frames] = {list(frames.shape[:2])}, got {list(frame_mask.shape)}")
    return torch.where(frame_mask[..., None], mask_embedding.to(frames.dtype), frames)


def check_layer(layer: int, num_layers: int, encoder_name: str) -> None:
    """Raise ``ValueError`` unless ``1 <= layer <= num_layers``."""
    if not 1 <= layer <= num_layers:
        raise ValueError(f"encoder '{encoder_name}' has context layers 1..{num_layers}, not {layer}")
