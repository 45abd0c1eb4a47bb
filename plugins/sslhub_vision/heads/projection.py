"""The MLP projection head of SimCLR-style objectives."""

from __future__ import annotations

from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """``num_layers`` linear layers with BatchNorm (optional) and ReLU between them.

    SimCLR computes its loss on these projections, not on the encoder's features; the
    encoder's features generalise better downstream.

    Args:
        input_dim: encoder feature size ``D``.
        hidden_dim: width of the hidden layers.
        output_dim: projection size ``P``.
        num_layers: linear layers in total (1 is a single linear map).
        batch_norm: BatchNorm1d after each hidden linear layer.

    Shapes: ``[B, D]`` -> ``[B, P]``.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int = 2, batch_norm: bool = True):
        super().__init__()
        for name, value in (("input_dim", input_dim), ("hidden_dim", hidden_dim), ("output_dim", output_dim)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        width = input_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(width, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            width = hidden_dim
        layers.append(nn.Linear(width, output_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
