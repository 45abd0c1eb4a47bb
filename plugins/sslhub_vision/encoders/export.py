"""The module exported to ONNX for image encoders: ``image -> pooled`` with a named argument.

The core's default export wrapper takes ``*inputs``; ``torch.onnx.export(dynamo=True)``
then sees one tuple argument, and ``dynamic_axes={"image": {0: "batch"}}`` does not match
that structure. A wrapper with an explicit ``image`` parameter exports with either
``dynamic_axes`` or ``dynamic_shapes``.
"""

from __future__ import annotations

from torch import Tensor, nn

from sslhub import Encoder


class ImageExportModule(nn.Module):
    """``forward(image: [B, C, S, S] float in [0, 1]) -> pooled [B, D]``."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, image: Tensor) -> Tensor:
        return self.encoder({"image": image}).pooled
