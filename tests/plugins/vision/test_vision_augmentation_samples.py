"""ImageModality.augmentation_samples: the grid of views the run report shows."""

from __future__ import annotations

import torch

from sslhub_vision.modality import ImageModality, ImageParams


def test_each_row_is_an_image_then_its_views_as_uint8_rgb():
    modality = ImageModality(ImageParams(image_size=16, eval_fraction=0.25))
    images = torch.rand(3, 3, 16, 16)
    views = [{"image": images.flip(-1)}, {"image": torch.zeros(3, 3, 8, 8)}]  # a view of another size is resized
    grid = modality.augmentation_samples({"image": images}, views)["views"]
    assert grid.dtype == torch.uint8 and grid.shape == (3 * 20, 3 * 20, 3)
    first = (images[0].permute(1, 2, 0) * 255).round().to(torch.uint8)
    assert torch.equal(grid[2:18, 2:18], first)
    assert torch.equal(grid[2:18, 22:38], first.flip(1))
    assert int(grid[2:18, 42:58].max()) == 0


def test_gray_images_become_three_channels():
    modality = ImageModality(ImageParams(image_size=8, channels=1, eval_fraction=0.25))
    grid = modality.augmentation_samples({"image": torch.rand(2, 1, 8, 8)}, [])["views"]
    assert grid.shape == (2 * 12, 12, 3)
