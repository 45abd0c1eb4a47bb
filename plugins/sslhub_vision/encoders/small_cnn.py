"""``small_cnn``: a small built-in convolutional encoder for tests and quick recipes."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field
from torch import Tensor, nn

from sslhub import BuildContext, Encoder, EncoderOutput, Params
from sslhub_vision.encoders.export import ImageExportModule
from sslhub_vision.encoders.normalize import Normalize, image_facts


class SmallCNNParams(Params):
    """Parameters of ``small_cnn``."""

    width: int = Field(32, gt=0, le=1024, description="channels of the first stage; doubled at each later stage")
    stages: int = Field(3, ge=1, le=6, description="number of stages; each after the first halves the resolution")
    convs_per_stage: int = Field(2, ge=1, le=4, description="3x3 conv + norm + ReLU layers per stage")
    stem_stride: int = Field(1, ge=1, le=4, description="stride of the very first conv (2 quarters the compute)")
    batch_norm: bool = Field(True, description="BatchNorm after each conv (GroupNorm(1) -- layer norm -- if false)")


def _conv_block(in_channels: int, out_channels: int, stride: int, batch_norm: bool) -> nn.Sequential:
    norm = nn.BatchNorm2d(out_channels) if batch_norm else nn.GroupNorm(1, out_channels)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False), norm, nn.ReLU(inplace=True)
    )


class SmallCNN(Encoder):
    """A VGG-style CNN: ``stages`` stages of 3x3 convs, width doubling and stride 2 between stages.

    Normalises ``[0, 1]`` input with the modality's mean/std first.

    Shapes:
        input ``image``: float ``[B, C, S, S]`` in ``[0, 1]``.
        ``pooled``: ``[B, D]`` with ``D = width * 2**(stages-1)``.
        ``spatial``: ``[B, D, s, s]`` with ``s = S / (stem_stride * 2**(stages-1))`` (rounded up).
    """

    input_names = ("image",)
    provides = frozenset({"pooled", "spatial"})

    def __init__(self, params: SmallCNNParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params = params or SmallCNNParams()
        channels, _, mean, std = image_facts(context)
        self.normalize = Normalize(mean, std)
        layers: list[nn.Module] = []
        in_channels = channels
        for stage in range(params.stages):
            out_channels = params.width * 2**stage
            for index in range(params.convs_per_stage):
                stride = 1
                if index == 0:
                    stride = 2 if stage > 0 else params.stem_stride
                layers.append(_conv_block(in_channels, out_channels, stride, params.batch_norm))
                in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = in_channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, batch: Mapping[str, Tensor]) -> EncoderOutput:
        spatial = self.features(self.normalize(batch["image"]))
        return EncoderOutput(pooled=self.pool(spatial).flatten(1), spatial=spatial)

    def export_module(self) -> nn.Module:
        """``image [B, C, S, S] in [0, 1] -> pooled [B, D]``, for ``torch.onnx.export``."""
        return ImageExportModule(self)
