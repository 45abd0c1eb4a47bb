"""The frames HuBERT clusters in its later iterations: a trained encoder's intermediate layer.

HuBERT's first iteration predicts k-means clusters of log-mel (MFCC) frames; its second fits
k-means on the frames of an intermediate layer of the first iteration's model and trains a new
model to predict those. :class:`ClusterTeacher` is that first model, loaded read-only through
the public :func:`sslhub.load_encoder`: frozen, in eval mode, and kept out of the objective's
modules so that it is neither trained nor written into checkpoints (the recipe names its folder,
so a resumed run loads the same teacher).

References:
    - Hsu et al., "HuBERT", TASLP 2021, section III.C (iterative refinement of the targets).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

import sslhub
from sslhub import Encoder
from sslhub_audio.encoders.frame_masking import frame_width


class ClusterTeacher:
    """A trained encoder whose layer-``layer`` frames are the clustering targets.

    Args:
        path: a run, fine-tune or export folder (anything :func:`sslhub.load_encoder` takes).
        layer: the context layer to read (1 = the first); ``None`` for the middle one, as
            HuBERT reads layer 6 of 12.
        frame_rate_divisor: mel frames per student frame; the teacher must have the same rate,
            or its frames would not line up with the student's masks.

    Raises:
        ValueError: the folder holds no loadable encoder, the encoder lacks ``frame_layers``,
            the layer is out of range or the frame rates differ.
    """

    def __init__(self, path: str, layer: int | None, frame_rate_divisor: int):
        try:
            loaded = sslhub.load_encoder(path)
        except sslhub.SSLHubError as error:
            raise ValueError(f"masked_audio teacher {path!r} cannot be loaded: {error}") from None
        encoder: Encoder = loaded.encoder
        name = type(encoder).__name__
        if "frame_layers" not in getattr(encoder, "provides", ()):
            raise ValueError(
                f"masked_audio teacher {path!r} is a {name}, which does not declare frame_layers (hidden_frames); "
                "train the first iteration with encoder 'frame_transformer', 'wav2vec2' or 'hubert'"
            )
        teacher_divisor = getattr(encoder, "frame_rate_divisor", None)
        if teacher_divisor != frame_rate_divisor:
            raise ValueError(
                f"masked_audio teacher {path!r} has {teacher_divisor} mel frames per encoder frame and the "
                f"encoder being trained has {frame_rate_divisor}: give both the same strides"
            )
        self.layer = layer if layer is not None else max(1, encoder.num_context_layers // 2)
        if not 1 <= self.layer <= encoder.num_context_layers:
            raise ValueError(
                f"masked_audio teacher_layer={self.layer}, but the teacher has layers 1..{encoder.num_context_layers}"
            )
        self.encoder = encoder.eval().requires_grad_(False)
        self.dim = frame_width(encoder)

    @torch.no_grad()
    def frames(self, batch: Mapping[str, Tensor], num_frames: int) -> Tensor:
        """The teacher's layer-``layer`` frames of ``batch``: ``[B, num_frames, dim]``, float32."""
        device = next(iter(batch.values())).device
        if next(self.encoder.parameters()).device != device:
            self.encoder.to(device)
        frames = self.encoder.hidden_frames(batch, self.layer).float()
        if frames.shape[1] != num_frames:
            raise ValueError(f"masked_audio teacher gave {frames.shape[1]} frames where the encoder has {num_frames}")
        return frames
