"""``mlp``: a multilayer perceptron encoder for ``vector`` batches (the tabular modality)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from sslhub import BuildContext, Encoder, EncoderOutput, ModalityInfo, Params


class MLPParams(Params):
    """Parameters of the ``mlp`` encoder."""

    hidden_sizes: list[int] = Field(
        default_factory=lambda: [256, 256], description="width of each hidden layer (Linear + norm + activation)"
    )
    output_dim: int = Field(64, gt=0, description="size of the pooled representation")
    activation: Literal["gelu", "relu", "silu"] = Field("gelu", description="hidden activation")
    norm: Literal["layer", "batch", "none"] = Field("layer", description="normalisation after each hidden Linear")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout after each hidden activation")
    readout: Literal["last", "all_layers"] = Field(
        "last",
        description="pooled vector: last (the final Linear's output) or all_layers (every hidden layer's "
        "activations and the final output, concatenated: keeps what the early layers learned)",
    )

    @field_validator("hidden_sizes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(size <= 0 for size in value):
            raise ValueError(f"hidden_sizes must all be > 0, got {value}")
        return value


_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


class MLPEncoder(Encoder):
    """``vector [B, D_in] -> (Linear, norm, activation, dropout) x len(hidden_sizes) -> Linear -> pooled``.

    ``pooled`` is ``[B, output_dim]`` with ``readout: last``, or ``[B, sum(hidden_sizes) +
    output_dim]`` with ``readout: all_layers`` (each hidden layer's activations, then the final
    output). ``D_in`` comes from the modality's ``info().dim``. The last layer is linear: the
    representation is not squashed by an activation.
    """

    input_names = ("vector",)
    provides = frozenset({"pooled"})

    def __init__(self, params: MLPParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params = params or MLPParams()
        info = context.modality.info() if context is not None and context.modality is not None else ModalityInfo()
        if info.dim is None:
            raise ValueError("encoder 'mlp' needs a modality whose info() has 'dim' (the tabular modality)")
        self.input_dim = int(info.dim)
        layers: list[nn.Module] = []
        #: indices into ``layers`` whose outputs ``readout: all_layers`` keeps (each hidden block's end).
        self._taps: list[int] = []
        size = self.input_dim
        for width in params.hidden_sizes:
            layers.append(nn.Linear(size, width))
            if params.norm == "layer":
                layers.append(nn.LayerNorm(width))
            elif params.norm == "batch":
                layers.append(nn.BatchNorm1d(width))
            layers.append(_ACTIVATIONS[params.activation]())
            if params.dropout:
                layers.append(nn.Dropout(params.dropout))
            self._taps.append(len(layers) - 1)
            size = width
        layers.append(nn.Linear(size, params.output_dim))
        self.layers = nn.Sequential(*layers)
        self.feature_dim = params.output_dim
        if params.readout == "all_layers":
            self.feature_dim += sum(params.hidden_sizes)

    def forward(self, batch: Mapping[str, Tensor]) -> EncoderOutput:
        vector = batch["vector"]
        if vector.dim() != 2 or vector.shape[1] != self.input_dim:
            raise ValueError(f"mlp expects vector [batch, {self.input_dim}], got {tuple(vector.shape)}")
        if self.params.readout == "last":
            return EncoderOutput(pooled=self.layers(vector))
        kept = []
        hidden = vector
        for index, layer in enumerate(self.layers):
            hidden = layer(hidden)
            if index in self._taps:
                kept.append(hidden)
        return EncoderOutput(pooled=torch.cat([*kept, hidden], dim=1))

    def export_module(self) -> nn.Module:
        """``vector [B, D_in] -> pooled [B, feature_dim]``, for ``torch.onnx.export``."""
        return _VectorExport(self)


class _VectorExport(nn.Module):
    """A named ``vector`` argument, so ``dynamic_axes={"vector": ...}`` matches the export signature."""

    def __init__(self, encoder: MLPEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, vector: Tensor) -> Tensor:
        return self.encoder({"vector": vector}).pooled
