"""Batched, device-side image augmentations (float images ``[B, C, H, W]`` in ``[0, 1]``)."""

from sslhub_vision.augmentations.blur import GaussianBlur, GaussianBlurParams
from sslhub_vision.augmentations.color import (
    ColorJitter,
    ColorJitterParams,
    RandomGrayscale,
    RandomGrayscaleParams,
    Solarize,
    SolarizeParams,
)
from sslhub_vision.augmentations.crop import RandomResizedCrop, RandomResizedCropParams
from sslhub_vision.augmentations.flip import HorizontalFlip, HorizontalFlipParams
from sslhub_vision.augmentations.multi_view import Compose, MultiView

__all__ = [
    "ColorJitter",
    "ColorJitterParams",
    "Compose",
    "GaussianBlur",
    "GaussianBlurParams",
    "HorizontalFlip",
    "HorizontalFlipParams",
    "MultiView",
    "RandomGrayscale",
    "RandomGrayscaleParams",
    "RandomResizedCrop",
    "RandomResizedCropParams",
    "Solarize",
    "SolarizeParams",
]
