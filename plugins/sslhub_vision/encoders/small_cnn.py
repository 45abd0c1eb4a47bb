"""``small_cnn``: a small built-in convolutional encoder for tests and quick recipes."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field
from torch import Tensor, nn

from sslhub import BuildContext, Encoder, EncoderOutput, Params
from sslhub_vision.encoders.export import ImageExportModule
from sslhub_vision.encoders.normalize import Normalize, image_facts
from sslhub_vision.encoders.pooling import PoolName, build_pool, check_pyramid


class SmallCNNParams(Params):
    """Parameters of ``small_cnn``."""

    width: int = Field(32, gt=0, le=1024, description="channels of the first stage; doubled at each later stage")
    stages: int = Field(3, ge=1, le=6, description="number of stages; each after the first halves the resolution")
    convs_per_stage: int = Field(2, ge=1, le=4, description="3x3 conv + norm + ReLU layers per stage")
    stem_stride: int = Field(1, ge=1, le=4, description="stride of the very first conv (2 quarters the compute)")
    batch_norm: bool = Field(True, description="BatchNorm after each conv (GroupNorm(1) -- layer norm -- if false)")
    pool: PoolName = Field(
        "avg",
        description="pooled vector: avg (global average of the last map) or pyramid (global average plus "
        "averages over pyramid_levels grids: keeps the layout reconstruction objectives learn)",
    )
    pyramid_levels: list[int] = Field(
        default_factory=lambda: [1, 2],
        min_length=1,
        description="pool: pyramid: grid sizes (1 = global); each must divide the pooled maps' sides",
    )
    pooled_stages: int = Field(
        1,
        ge=1,
        le=6,
        description="how many of the last stages' output maps are pooled and concatenated (1: the last map only); "
        "earlier stages add the finer, local features a reconstruction objective leaves there",
    )


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
        ``pooled``: ``[B, D]``: the pooled output maps of the last ``pooled_stages`` stages,
        concatenated; each stage gives its channels (``width * 2**stage``) with ``pool: avg``,
        times ``sum(level**2)`` over ``pyramid_levels`` with ``pool: pyramid``.
        ``spatial``: ``[B, D, s, s]`` with ``s = S / (stem_stride * 2**(stages-1))`` (rounded up).
    """

    input_names = ("image",)
    provides = frozenset({"pooled", "spatial"})

    def __init__(self, params: SmallCNNParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params = params or SmallCNNParams()
        channels, image_size, mean, std = image_facts(context)
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
        if params.pooled_stages > params.stages:
            raise ValueError(f"small_cnn: pooled_stages ({params.pooled_stages}) exceeds stages ({params.stages})")
        # indices (into features) of the last conv of each pooled stage
        per_stage = params.convs_per_stage
        self.pooled_layers = [per_stage * (stage + 1) - 1 for stage in range(params.stages)][-params.pooled_stages :]
        self.pool = build_pool(params.pool, params.pyramid_levels)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        self.feature_dim = self._check_pooled_maps(channels, image_size)

    @torch.no_grad()
    def _check_pooled_maps(self, channels: int, image_size: int) -> int:
        """Width of ``pooled`` for ``image_size`` inputs; checks the pyramid fits every pooled map."""
        was_training = self.features.training
        self.features.eval()
        maps = self._pooled_maps(torch.zeros(1, channels, image_size, image_size))
        self.features.train(was_training)
        if self.params.pool == "pyramid":
            for feature_map in maps:
                check_pyramid(self.params.pyramid_levels, *feature_map.shape[-2:], "small_cnn")
        return sum(self.pool.output_dim(feature_map.shape[1]) for feature_map in maps)

    def _pooled_maps(self, x: Tensor) -> list[Tensor]:
        """The output maps of the pooled stages, the last one (``spatial``) last."""
        if len(self.pooled_layers) == 1:
            return [self.features(x)]
        maps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.pooled_layers:
                maps.append(x)
        return maps

    def forward(self, batch: Mapping[str, Tensor]) -> EncoderOutput:
        maps = self._pooled_maps(self.normalize(batch["image"]))
        pooled = [self.pool(feature_map) for feature_map in maps]
        return EncoderOutput(pooled=pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=1), spatial=maps[-1])

    def export_module(self) -> nn.Module:
        """``image [B, C, S, S] in [0, 1] -> pooled [B, D]``, for ``torch.onnx.export``."""
        return ImageExportModule(self)
