"""``gaussian_blur``: blur each image with its own random sigma, as one grouped convolution."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from torch import Tensor

from sslhub import BuildContext, Params
from sslhub_vision.augmentations import functional as AF
from sslhub_vision.augmentations.base import ImageAugmentation, sample_mask, uniform, where_mask


class GaussianBlurParams(Params):
    """Parameters of ``gaussian_blur``."""

    kernel_size: int | None = Field(
        None, description="odd kernel length; default: about 10% of the image side (SimCLR), at least 3"
    )
    sigma: tuple[float, float] = Field((0.1, 2.0), description="range sigma is drawn from, in pixels")
    p: float = Field(0.5, ge=0.0, le=1.0, description="probability of blurring each image")

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value: int | None) -> int | None:
        if value is not None and (value < 1 or value % 2 == 0):
            raise ValueError(f"kernel_size must be a positive odd number, got {value}")
        return value

    @model_validator(mode="after")
    def _check_sigma(self) -> GaussianBlurParams:
        if not 0 < self.sigma[0] <= self.sigma[1]:
            raise ValueError(f"sigma must satisfy 0 < low <= high, got {list(self.sigma)}")
        return self


class GaussianBlur(ImageAugmentation):
    """Gaussian blur with probability ``p`` and a per-sample sigma from ``sigma``.

    Matches ``RandomApply([GaussianBlur(kernel_size, sigma)], p)`` from torchvision (same
    kernel, reflect padding), batched as a separable convolution with one group per
    sample and channel.

    Shapes: ``image`` ``[B, C, H, W]`` -> ``[B, C, H, W]``.
    """

    def __init__(self, params: GaussianBlurParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params or GaussianBlurParams()

    def kernel_size_for(self, height: int, width: int) -> int:
        if self.params.kernel_size is not None:
            size = self.params.kernel_size
        else:
            size = max(3, int(0.1 * min(height, width)) // 2 * 2 + 1)
        if size // 2 >= min(height, width):
            raise ValueError(
                f"gaussian_blur kernel_size {size} is too large for {height}x{width} images "
                f"(reflect padding needs kernel_size < {2 * min(height, width)})"
            )
        return size

    def transform(self, image: Tensor) -> Tensor:
        if self.params.p == 0:
            return image
        batch, _, height, width = image.shape
        apply = sample_mask(batch, self.params.p, image.device)
        sigma = uniform(*self.params.sigma, batch, image.device)
        blurred = AF.gaussian_blur(image, self.kernel_size_for(height, width), sigma)
        return where_mask(apply, blurred, image)
