"""``wav2vec2`` / ``hubert``: torchaudio's Wav2Vec2Model built from a (small) config, on waveforms.

Never downloads weights: the model is built with ``torchaudio.models.wav2vec2_model`` from the
parameters below, randomly initialised. In torchaudio, wav2vec 2.0 and HuBERT share this
architecture (conv feature extractor -> projection -> conv positional embedding ->
transformer); they differ in pre-training, which sslhub's ``masked_audio`` objective provides
(``target: clusters`` is HuBERT's first iteration).

``waveform [B, T] -> tokens [B, T', D]`` with ``T'`` set by the conv stack (320x subsampling
by default: 20 ms frames at 16 kHz); ``pooled`` is the mean over frames, or the temporal pyramid
and statistics pooling of ``pool_levels`` / ``pool_std`` (see ``time_pooling``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torchaudio
from pydantic import Field, model_validator
from torch import Tensor

from sslhub import BuildContext, Encoder, EncoderOutput, Modality
from sslhub_audio.encoders.frame_masking import check_layer, replace_masked_frames
from sslhub_audio.encoders.time_pooling import TimePool, TimePoolParams

DEFAULT_CONV_LAYERS = [[64, 10, 5], [64, 3, 2], [64, 3, 2], [64, 3, 2], [64, 3, 2], [64, 2, 2], [64, 2, 2]]


class Wav2Vec2Params(TimePoolParams):
    """Architecture of a torchaudio Wav2Vec2Model (defaults: a small model for CPU runs)."""

    conv_layers: list[list[int]] = Field(
        default_factory=lambda: [list(layer) for layer in DEFAULT_CONV_LAYERS],
        min_length=1,
        description="Feature extractor conv layers as [channels, kernel, stride] (wav2vec 2.0 base uses 512 channels).",
    )
    extractor_mode: Literal["group_norm", "layer_norm"] = Field("group_norm", description="Feature extractor norm.")
    embed_dim: int = Field(128, gt=0, description="Transformer width.")
    num_layers: int = Field(4, ge=1, description="Transformer layers.")
    num_heads: int = Field(4, ge=1, description="Attention heads (must divide embed_dim).")
    ff_dim: int = Field(512, gt=0, description="Feed-forward width.")
    pos_conv_kernel: int = Field(32, ge=2, description="Kernel of the convolutional positional embedding.")
    pos_conv_groups: int = Field(8, ge=1, description="Groups of the convolutional positional embedding.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout inside the transformer.")
    layer_norm_first: bool = Field(False, description="Pre-norm transformer layers (wav2vec 2.0 large style).")

    @model_validator(mode="after")
    def _check(self) -> Wav2Vec2Params:
        if any(len(layer) != 3 or min(layer) < 1 for layer in self.conv_layers):
            raise ValueError(
                f"conv_layers must be [channels, kernel, stride] triples of positive ints, got {self.conv_layers}"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide embed_dim ({self.embed_dim})")
        if self.embed_dim % self.pos_conv_groups:
            raise ValueError(f"pos_conv_groups ({self.pos_conv_groups}) must divide embed_dim ({self.embed_dim})")
        return self


def builder_arguments(params: Wav2Vec2Params) -> dict[str, Any]:
    """The keyword arguments of ``torchaudio.models.wav2vec2_model`` for ``params`` (JSON-ready)."""
    return {
        "extractor_mode": params.extractor_mode,
        "extractor_conv_layer_config": [list(layer) for layer in params.conv_layers],
        "extractor_conv_bias": False,
        "encoder_embed_dim": params.embed_dim,
        "encoder_projection_dropout": params.dropout,
        "encoder_pos_conv_kernel": params.pos_conv_kernel,
        "encoder_pos_conv_groups": params.pos_conv_groups,
        "encoder_num_layers": params.num_layers,
        "encoder_num_heads": params.num_heads,
        "encoder_attention_dropout": params.dropout,
        "encoder_ff_interm_features": params.ff_dim,
        "encoder_ff_interm_dropout": params.dropout,
        "encoder_dropout": params.dropout,
        "encoder_layer_norm_first": params.layer_norm_first,
        "encoder_layer_drop": 0.0,
        "aux_num_out": None,
    }


class Wav2Vec2Encoder(Encoder):
    """torchaudio Wav2Vec2Model (random init, built from config) on ``batch["waveform"]``."""

    input_names = ("waveform",)
    provides = frozenset({"pooled", "tokens", "frame_masking", "frame_layers"})

    def __init__(self, params: Wav2Vec2Params, context: BuildContext | None = None):
        super().__init__()
        self.params = params
        self.model = torchaudio.models.wav2vec2_model(**builder_arguments(params))
        self.pool = TimePool.from_params(params)
        self.token_dim = params.embed_dim
        self.feature_dim = self.pool.output_dim(params.embed_dim)
        self.sample_stride = math.prod(layer[2] for layer in params.conv_layers)
        hop = context.modality.info().hop_length if context is not None and context.modality is not None else None
        #: mel frames per encoder frame (for masked_audio targets); None if not a whole number.
        self.frame_rate_divisor: int | None = (
            self.sample_stride // hop if hop and self.sample_stride % hop == 0 else None
        )

    def num_frames(self, num_samples: int) -> int:
        """Encoder frames ``T'`` for a waveform of ``num_samples`` samples."""
        length = num_samples
        for _, kernel, stride in self.params.conv_layers:
            length = (length - kernel) // stride + 1
        return length

    def count_frames(self, batch: Mapping[str, Tensor]) -> int:
        return self.num_frames(batch["waveform"].shape[-1])

    def embed_frames(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Local frame features before the transformer: conv feature encoder, then projection.

        ``waveform [B, T] -> [B, T', D]``: what ``wav2vec2``'s quantizer reads and the mask replaces
        (torchaudio's ``feature_projection``: layer norm and a linear map of the conv features).
        """
        waveform = batch["waveform"]
        if waveform.dim() != 2:
            raise ValueError(f"wav2vec2 expects waveform [batch, samples], got {tuple(waveform.shape)}")
        features, _ = self.model.feature_extractor(waveform, None)
        return self.model.encoder.feature_projection(features)

    def transform_frames(self, frames: Tensor) -> EncoderOutput:
        """The context network (convolutional positions + transformer) on ``[B, T', D]`` frames.

        Returns:
            :class:`EncoderOutput` with ``tokens [B, T', D]`` and ``pooled [B, feature_dim]``.
        """
        tokens = self.model.encoder.transformer(frames)
        return EncoderOutput(pooled=self.pool(tokens), tokens=tokens)

    def forward_frames(
        self, batch: Mapping[str, Tensor], frame_mask: Tensor | None = None, mask_embedding: Tensor | None = None
    ) -> EncoderOutput:
        """Encode, replacing projected frame features at ``frame_mask`` by ``mask_embedding``.

        Args:
            batch: holds ``waveform`` ``[B, T]``.
            frame_mask: ``[B, T']`` bool or ``None``.
            mask_embedding: ``[D]``, required with ``frame_mask``.
        """
        return self.transform_frames(replace_masked_frames(self.embed_frames(batch), frame_mask, mask_embedding))

    def forward(self, batch: Mapping[str, Tensor]) -> EncoderOutput:
        return self.forward_frames(batch)

    @property
    def num_context_layers(self) -> int:
        return len(self.model.encoder.transformer.layers)

    def hidden_frames(self, batch: Mapping[str, Tensor], layer: int) -> Tensor:
        """The frames after transformer layer ``layer`` (1 = the first): ``[B, T', D]``."""
        check_layer(layer, self.num_context_layers, "wav2vec2")
        transformer = self.model.encoder.transformer
        return transformer.get_intermediate_outputs(self.embed_frames(batch), None, num_layers=layer)[-1]

    def export_native(self, directory: Path, modality: Modality) -> dict[str, str]:
        """torchaudio's own model: ``model.pt`` (a state dict) and ``wav2vec2_config.json`` (the builder's arguments).

        ``model = torchaudio.models.wav2vec2_model(**config)``, then
        ``model.load_state_dict(torch.load("model.pt", weights_only=True))``: ``model(waveform)[0]``
        is this encoder's ``tokens`` ``[B, T', D]``; its ``pooled`` is their mean over frames (with
        ``pool_levels`` / ``pool_std`` set: the read-out of ``time_pooling.TimePool`` on them).
        """
        weights = {key: value.detach().cpu().contiguous() for key, value in self.model.state_dict().items()}
        torch.save(weights, directory / "model.pt")
        (directory / "wav2vec2_config.json").write_text(json.dumps(builder_arguments(self.params), indent=2) + "\n")
        return {
            "model.pt": "torchaudio Wav2Vec2Model state dict (torch.load(weights_only=True))",
            "wav2vec2_config.json": "keyword arguments of torchaudio.models.wav2vec2_model",
        }
