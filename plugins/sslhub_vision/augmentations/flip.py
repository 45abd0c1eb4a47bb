"""``horizontal_flip``: mirror each image left-right with probability ``p``."""

from __future__ import annotations

from pydantic import Field
from torch import Tensor

from sslhub import BuildContext, Params
from sslhub_vision.augmentations.base import ImageAugmentation, sample_mask, where_mask


class HorizontalFlipParams(Params):
    """Parameters of ``horizontal_flip``."""

    p: float = Field(0.5, ge=0.0, le=1.0, description="probability of flipping each image")


class HorizontalFlip(ImageAugmentation):
    """Flip each image horizontally with probability ``p``, independently per sample.

    Shapes: ``image`` ``[B, C, H, W]`` -> ``[B, C, H, W]``.
    """

    def __init__(self, params: HorizontalFlipParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params or HorizontalFlipParams()

    def transform(self, image: Tensor) -> Tensor:
        if self.params.p == 0:
            return image
        mask = sample_mask(image.shape[0], self.params.p, image.device)
        return where_mask(mask, image.flip(-1), image)
