"""Network building blocks that several plugins share and that hold nothing of a modality.

``ConvDecoder``: a transposed-convolution decoder from an encoder's spatial map back to an
image (the vision plugin's inpainting and the autoencoder plugin's image decoders use it).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


class ConvDecoder(nn.Module):
    """Upsample ``[B, C_in, h, w]`` to ``[B, C_out, H, W]`` with stride-2 transposed convs.

    ``ceil(log2(H / h))`` doublings, channels halving from ``width * 2**(n-1)`` down to
    ``width``; a final bilinear resize covers sizes that are not a power-of-two multiple.
    By default the output goes through a sigmoid: images live in ``[0, 1]``.

    Args:
        in_channels: ``C_in`` of the spatial map.
        out_channels: image channels ``C_out``.
        in_size: ``(h, w)`` of the spatial map.
        out_size: ``(H, W)`` of the image.
        width: channels of the last upsampling stage.
        sigmoid: squash the output into ``[0, 1]``; ``False`` returns raw values (logits).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        in_size: tuple[int, int],
        out_size: tuple[int, int],
        width: int = 32,
        sigmoid: bool = True,
    ):
        super().__init__()
        if min(*in_size, *out_size, in_channels, out_channels, width) <= 0:
            raise ValueError(
                f"decoder sizes must be positive: in_channels={in_channels}, out_channels={out_channels}, "
                f"in_size={in_size}, out_size={out_size}, width={width}"
            )
        self.out_size = (int(out_size[0]), int(out_size[1]))
        self.sigmoid = sigmoid
        stages = max(0, math.ceil(math.log2(max(out_size[0] / in_size[0], out_size[1] / in_size[1]))))
        channels = width * 2 ** max(stages - 1, 0)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        for _ in range(stages):
            out = max(width, channels // 2)
            layers += [
                nn.ConvTranspose2d(channels, out, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.body = nn.Sequential(*layers)
        self.to_image = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, spatial: Tensor) -> Tensor:
        x = self.to_image(self.body(spatial))
        if tuple(x.shape[-2:]) != self.out_size:
            x = F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False)
        return x.sigmoid() if self.sigmoid else x
