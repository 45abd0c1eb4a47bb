"""``random_resized_crop``: a random box per sample, resampled to a fixed size with one grid_sample."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from sslhub import BuildContext, Params
from sslhub_vision.augmentations.base import ImageAugmentation

#: candidate boxes drawn per sample before falling back to a centre crop (torchvision's 10).
CROP_TRIALS = 10


class RandomResizedCropParams(Params):
    """Parameters of ``random_resized_crop``."""

    scale: tuple[float, float] = Field((0.08, 1.0), description="range of the crop's area as a share of the image")
    ratio: tuple[float, float] = Field((3 / 4, 4 / 3), description="range of the crop's aspect ratio (width/height)")
    size: int | None = Field(None, gt=0, description="output side length; default: the input's size")
    interpolation: Literal["bilinear", "nearest", "bicubic"] = Field("bilinear", description="resampling mode")

    @model_validator(mode="after")
    def _check_ranges(self) -> RandomResizedCropParams:
        low, high = self.scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {list(self.scale)}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < low <= high, got {list(self.ratio)}")
        return self


class RandomResizedCrop(ImageAugmentation):
    """Crop a random box of random area and aspect ratio from each image and resize it.

    Same sampling as ``torchvision.transforms.v2.RandomResizedCrop`` (area share from
    ``scale``, log-uniform aspect ratio from ``ratio``, up to 10 tries, then a centre crop
    clipped to ``ratio``), but boxes are continuous rather than whole pixels, and the whole
    batch is resampled by one ``affine_grid``/``grid_sample`` call.

    Shapes: ``image`` ``[B, C, H, W]`` -> ``[B, C, S, S]`` (``S = size``, or ``H, W`` kept).
    """

    def __init__(self, params: RandomResizedCropParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params or RandomResizedCropParams()

    def sample_boxes(self, batch: int, height: int, width: int, device: torch.device) -> Tensor:
        """Random boxes in pixels: ``[B, 4]`` as (left, top, box_width, box_height)."""
        area = height * width
        low, high = self.params.scale
        log_low, log_high = math.log(self.params.ratio[0]), math.log(self.params.ratio[1])
        target = area * torch.empty(batch, CROP_TRIALS, device=device).uniform_(low, high)
        aspect = torch.exp(torch.empty(batch, CROP_TRIALS, device=device).uniform_(log_low, log_high))
        box_w = torch.sqrt(target * aspect)
        box_h = torch.sqrt(target / aspect)
        valid = (box_w <= width) & (box_h <= height)
        # first valid trial per sample (argmax of a bool picks the first True)
        first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)
        any_valid = valid.any(dim=1)
        box_w = box_w.gather(1, first).squeeze(1)
        box_h = box_h.gather(1, first).squeeze(1)
        # fallback: the largest centred box whose ratio is within range
        in_ratio = width / height
        if in_ratio < self.params.ratio[0]:
            fallback_w, fallback_h = float(width), width / self.params.ratio[0]
        elif in_ratio > self.params.ratio[1]:
            fallback_w, fallback_h = height * self.params.ratio[1], float(height)
        else:
            fallback_w, fallback_h = float(width), float(height)
        box_w = torch.where(any_valid, box_w, torch.full_like(box_w, fallback_w))
        box_h = torch.where(any_valid, box_h, torch.full_like(box_h, fallback_h))
        u = torch.rand(batch, 2, device=device)
        left = torch.where(any_valid, u[:, 0] * (width - box_w), (width - box_w) / 2)
        top = torch.where(any_valid, u[:, 1] * (height - box_h), (height - box_h) / 2)
        return torch.stack((left, top, box_w, box_h), dim=1)

    def transform(self, image: Tensor) -> Tensor:
        batch, channels, height, width = image.shape
        out_h = out_w = self.params.size
        if out_h is None:
            out_h, out_w = height, width
        left, top, box_w, box_h = self.sample_boxes(batch, height, width, image.device).to(image.dtype).unbind(1)
        # affine_grid maps output coordinates in [-1, 1] to input coordinates in [-1, 1]
        # (align_corners=False: -1 and 1 are the outer pixel edges).
        theta = torch.zeros(batch, 2, 3, device=image.device, dtype=image.dtype)
        theta[:, 0, 0] = box_w / width
        theta[:, 0, 2] = (2 * left + box_w) / width - 1
        theta[:, 1, 1] = box_h / height
        theta[:, 1, 2] = (2 * top + box_h) / height - 1
        grid = F.affine_grid(theta, [batch, channels, out_h, out_w], align_corners=False)
        out = F.grid_sample(image, grid, mode=self.params.interpolation, padding_mode="border", align_corners=False)
        return out.clamp(0.0, 1.0) if self.params.interpolation == "bicubic" else out
