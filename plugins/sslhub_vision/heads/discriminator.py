"""A small convolutional discriminator for the adversarial term of inpainting."""

from __future__ import annotations

from torch import Tensor, nn


class ConvDiscriminator(nn.Module):
    """Real-vs-inpainted classifier: stride-2 4x4 convs with LeakyReLU, averaged patch logits.

    Args:
        in_channels: image channels.
        width: channels of the first layer (doubled at each of the three layers).

    Shapes: ``[B, C, H, W]`` (H, W >= 8) -> logits ``[B]``.
    """

    def __init__(self, in_channels: int, width: int = 32):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        layers: list[nn.Module] = []
        channels = in_channels
        for index in range(3):
            out = width * 2**index
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, image: Tensor) -> Tensor:
        return self.layers(image).mean(dim=(1, 2, 3))
