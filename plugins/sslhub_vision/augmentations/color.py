"""Colour augmentations: ``color_jitter``, ``random_grayscale`` and ``solarize``."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from sslhub import BuildContext, Params
from sslhub_vision.augmentations import functional as AF
from sslhub_vision.augmentations.base import ImageAugmentation, sample_mask, uniform, where_mask


class ColorJitterParams(Params):
    """Parameters of ``color_jitter`` (strengths as in torchvision's ``ColorJitter``)."""

    brightness: float = Field(0.4, ge=0.0, description="factor drawn from [max(0, 1-b), 1+b]; 0 disables")
    contrast: float = Field(0.4, ge=0.0, description="factor drawn from [max(0, 1-c), 1+c]; 0 disables")
    saturation: float = Field(0.4, ge=0.0, description="factor drawn from [max(0, 1-s), 1+s]; 0 disables")
    hue: float = Field(0.1, ge=0.0, le=0.5, description="hue shift drawn from [-h, h] (fraction of the circle)")
    p: float = Field(0.8, ge=0.0, le=1.0, description="probability of jittering each image")


class ColorJitter(ImageAugmentation):
    """Random brightness, contrast, saturation and hue, with its own factors per sample.

    Equivalent to ``RandomApply([ColorJitter(b, c, s, h)], p)`` from torchvision applied to
    every sample: the four adjustments run in a random order (one order per call, drawn
    from torch's CPU generator so no device sync is needed), and each sample draws its
    own factors. Hue is rotated through a batched RGB -> HSV -> RGB round trip.

    Shapes: ``image`` ``[B, C, H, W]`` -> ``[B, C, H, W]``; saturation and hue leave
    one-channel images unchanged.
    """

    def __init__(self, params: ColorJitterParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params or ColorJitterParams()

    def transform(self, image: Tensor) -> Tensor:
        params = self.params
        strengths = (params.brightness, params.contrast, params.saturation, params.hue)
        if params.p == 0 or not any(strengths):
            return image
        batch, device = image.shape[0], image.device
        apply = sample_mask(batch, params.p, device)
        out = image
        for op in torch.randperm(4).tolist():
            strength = strengths[op]
            if strength == 0:
                continue
            if op == 3:
                out = AF.adjust_hue(out, uniform(-strength, strength, batch, device))
                continue
            factor = uniform(max(0.0, 1.0 - strength), 1.0 + strength, batch, device)
            if op == 0:
                out = AF.adjust_brightness(out, factor)
            elif op == 1:
                out = AF.adjust_contrast(out, factor)
            else:
                out = AF.adjust_saturation(out, factor)
        return where_mask(apply, out, image)


class RandomGrayscaleParams(Params):
    """Parameters of ``random_grayscale``."""

    p: float = Field(0.2, ge=0.0, le=1.0, description="probability of converting each image to gray")


class RandomGrayscale(ImageAugmentation):
    """Replace each image by its luma (kept at C channels) with probability ``p``.

    Shapes: ``image`` ``[B, C, H, W]`` -> ``[B, C, H, W]``.
    """

    def __init__(self, params: RandomGrayscaleParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params or RandomGrayscaleParams()

    def transform(self, image: Tensor) -> Tensor:
        if self.params.p == 0 or image.shape[1] == 1:
            return image
        mask = sample_mask(image.shape[0], self.params.p, image.device)
        gray = AF.rgb_to_grayscale(image).expand_as(image)
        return where_mask(mask, gray, image)


class SolarizeParams(Params):
    """Parameters of ``solarize``."""

    threshold: float = Field(0.5, ge=0.0, le=1.0, description="pixels at or above it are inverted")
    p: float = Field(0.2, ge=0.0, le=1.0, description="probability of solarizing each image")


class Solarize(ImageAugmentation):
    """Invert the pixels at or above ``threshold`` with probability ``p`` (BYOL's second view).

    Shapes: ``image`` ``[B, C, H, W]`` -> ``[B, C, H, W]``.
    """

    def __init__(self, params: SolarizeParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params or SolarizeParams()

    def transform(self, image: Tensor) -> Tensor:
        if self.params.p == 0:
            return image
        mask = sample_mask(image.shape[0], self.params.p, image.device)
        return where_mask(mask, AF.solarize(image, self.params.threshold), image)
