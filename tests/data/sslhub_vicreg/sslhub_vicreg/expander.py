"""The VICReg expander: an MLP from encoder features to the (wide) space the loss acts on."""

from __future__ import annotations

from torch import Tensor, nn


class Expander(nn.Module):
    """``layers`` linear layers; all but the last are followed by BatchNorm and ReLU (as in the paper).

    Shapes:
        input ``[N, in_dim]`` -> output ``[N, out_dim]``.
    """

    def __init__(self, in_dim: int, out_dim: int, layers: int = 3):
        super().__init__()
        if in_dim <= 0 or out_dim <= 0:
            raise ValueError(f"expander sizes must be positive, got in_dim={in_dim}, out_dim={out_dim}")
        if layers < 1:
            raise ValueError(f"expander needs at least one layer, got {layers}")
        modules: list[nn.Module] = []
        width = in_dim
        for _ in range(layers - 1):
            modules += [nn.Linear(width, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True)]
            width = out_dim
        modules.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*modules)

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)
