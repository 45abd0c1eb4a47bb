"""Batched image augmentations, checked against torchvision.transforms.v2 on the same inputs."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from sslhub_vision import augmentations as A
from sslhub_vision.augmentations import functional as AF


def _images(batch=16, size=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=generator)


ALL = [
    A.RandomResizedCrop(A.RandomResizedCropParams(scale=(0.2, 1.0))),
    A.HorizontalFlip(),
    A.ColorJitter(),
    A.RandomGrayscale(),
    A.GaussianBlur(),
    A.Solarize(),
]


@pytest.mark.parametrize("augmentation", ALL, ids=lambda a: type(a).__name__)
def test_shape_range_and_no_in_place_change(augmentation):
    x = _images()
    original = x.clone()
    batch = {"image": x, "label": torch.arange(16)}
    out = augmentation(batch)
    assert out["image"].shape == x.shape and out["image"].dtype == x.dtype
    assert out["image"].min() >= 0.0 and out["image"].max() <= 1.0
    assert torch.equal(x, original)
    assert out["label"] is batch["label"]


@pytest.mark.parametrize("augmentation", ALL, ids=lambda a: type(a).__name__)
def test_same_seed_same_view(augmentation):
    x = _images()
    torch.manual_seed(3)
    a = augmentation({"image": x})["image"]
    torch.manual_seed(3)
    b = augmentation({"image": x})["image"]
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "augmentation",
    [
        A.HorizontalFlip(A.HorizontalFlipParams(p=0)),
        A.ColorJitter(A.ColorJitterParams(p=0)),
        A.ColorJitter(A.ColorJitterParams(brightness=0, contrast=0, saturation=0, hue=0, p=1)),
        A.RandomGrayscale(A.RandomGrayscaleParams(p=0)),
        A.GaussianBlur(A.GaussianBlurParams(p=0)),
        A.Solarize(A.SolarizeParams(p=0)),
    ],
    ids=["flip_p0", "jitter_p0", "jitter_strength0", "gray_p0", "blur_p0", "solarize_p0"],
)
def test_identity_at_zero_probability_or_strength(augmentation):
    x = _images()
    assert torch.equal(augmentation({"image": x})["image"], x)


def test_full_image_crop_is_identity():
    crop = A.RandomResizedCrop(A.RandomResizedCropParams(scale=(1.0, 1.0), ratio=(1.0, 1.0)))
    x = _images()
    torch.testing.assert_close(crop({"image": x})["image"], x)


def test_crop_output_size_and_non_square_input():
    crop = A.RandomResizedCrop(A.RandomResizedCropParams(size=8))
    out = crop({"image": torch.rand(4, 3, 12, 20)})["image"]
    assert out.shape == (4, 3, 8, 8)


def test_per_sample_independence():
    # the same image in every row: different rows must get different parameters
    x = _images(batch=1).expand(32, -1, -1, -1).contiguous()
    for augmentation in (
        A.RandomResizedCrop(),
        A.ColorJitter(A.ColorJitterParams(p=1)),
        A.GaussianBlur(A.GaussianBlurParams(p=1, kernel_size=5)),
    ):
        out = augmentation({"image": x})["image"]
        distinct = {tuple(row.flatten()[:64].tolist()) for row in out}
        assert len(distinct) == 32, type(augmentation).__name__
    torch.manual_seed(0)
    flipped = A.HorizontalFlip()({"image": x})["image"]
    is_flipped = [torch.equal(row, x[0].flip(-1)) for row in flipped]
    assert 4 < sum(is_flipped) < 28
    gray = A.RandomGrayscale(A.RandomGrayscaleParams(p=0.5))({"image": x})["image"]
    is_gray = [torch.equal(row[0], row[1]) for row in gray]
    assert 4 < sum(is_gray) < 28


def test_functional_ops_equal_torchvision_sample_by_sample():
    x = _images(batch=6)
    factor = torch.tensor([0.0, 0.3, 0.9, 1.0, 1.4, 2.0])
    shift = torch.tensor([-0.5, -0.2, 0.0, 0.05, 0.3, 0.49])
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0, 3.0])
    per_sample = {
        "brightness": (
            AF.adjust_brightness(x, factor),
            [TF.adjust_brightness(x[i], factor[i].item()) for i in range(6)],
        ),
        "contrast": (AF.adjust_contrast(x, factor), [TF.adjust_contrast(x[i], factor[i].item()) for i in range(6)]),
        "saturation": (
            AF.adjust_saturation(x, factor),
            [TF.adjust_saturation(x[i], factor[i].item()) for i in range(6)],
        ),
        "hue": (AF.adjust_hue(x, shift), [TF.adjust_hue(x[i], shift[i].item()) for i in range(6)]),
        "blur": (
            AF.gaussian_blur(x, 7, sigma),
            [TF.gaussian_blur(x[i], [7, 7], [sigma[i].item()] * 2) for i in range(6)],
        ),
        "grayscale": (AF.rgb_to_grayscale(x), [TF.rgb_to_grayscale(x[i]) for i in range(6)]),
        "solarize": (AF.solarize(x, 0.4), [TF.solarize(x[i], 0.4) for i in range(6)]),
    }
    for name, (ours, theirs) in per_sample.items():
        torch.testing.assert_close(ours, torch.stack(theirs), atol=1e-5, rtol=0, msg=name)


def test_always_on_modules_equal_torchvision():
    x = _images()
    torch.testing.assert_close(
        A.HorizontalFlip(A.HorizontalFlipParams(p=1))({"image": x})["image"], TF.horizontal_flip(x)
    )
    gray = A.RandomGrayscale(A.RandomGrayscaleParams(p=1))({"image": x})["image"]
    torch.testing.assert_close(gray, TF.rgb_to_grayscale(x, num_output_channels=3))
    solar = A.Solarize(A.SolarizeParams(p=1, threshold=0.3))({"image": x})["image"]
    torch.testing.assert_close(solar, TF.solarize(x, 0.3))


def _ratio_quantiles(values: torch.Tensor) -> torch.Tensor:
    return torch.quantile(values, torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9]))


def test_brightness_factor_distribution_matches_torchvision():
    # constant 0.5 images: output / input is the brightness factor of each sample
    x = torch.full((1000, 3, 4, 4), 0.5)
    torch.manual_seed(0)
    ours = A.ColorJitter(A.ColorJitterParams(brightness=0.4, contrast=0, saturation=0, hue=0, p=1))({"image": x})
    reference = v2.ColorJitter(brightness=0.4)
    theirs = torch.stack([reference(img) for img in x])
    ours_ratio = ours["image"][:, 0, 0, 0] / 0.5
    theirs_ratio = theirs[:, 0, 0, 0] / 0.5
    assert ours_ratio.min() >= 0.6 - 1e-6 and ours_ratio.max() <= 1.4 + 1e-6
    torch.testing.assert_close(_ratio_quantiles(ours_ratio), _ratio_quantiles(theirs_ratio), atol=0.06, rtol=0)


def test_jitter_probability_matches():
    x = torch.full((1000, 3, 2, 2), 0.5)
    torch.manual_seed(1)
    out = A.ColorJitter(A.ColorJitterParams(brightness=0.4, contrast=0, saturation=0, hue=0, p=0.8))({"image": x})
    changed = (out["image"] != x).flatten(1).any(1).float().mean()
    assert abs(changed.item() - 0.8) < 0.05


def test_crop_area_distribution_matches_torchvision():
    # a coordinate image: channel 0 holds x, channel 1 holds y, so the output's range shows the box
    size = 32
    ramp = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    coords = torch.stack(
        (ramp.view(1, -1).expand(size, -1), ramp.view(-1, 1).expand(-1, size), torch.zeros(size, size))
    )
    x = coords.expand(600, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    ours = A.RandomResizedCrop(A.RandomResizedCropParams(scale=(0.08, 1.0)))({"image": x})["image"]
    reference = v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True)
    theirs = torch.stack([reference(img) for img in x])

    def box_area(images):
        width = images[:, 0, :, -1].mean(1) - images[:, 0, :, 0].mean(1)
        height = images[:, 1, -1, :].mean(1) - images[:, 1, 0, :].mean(1)
        return width * height

    ours_area, theirs_area = box_area(ours), box_area(theirs)
    assert abs(ours_area.mean() - theirs_area.mean()) < 0.05
    torch.testing.assert_close(_ratio_quantiles(ours_area), _ratio_quantiles(theirs_area), atol=0.07, rtol=0)


def test_multi_view_makes_independent_views():
    pipeline = A.Compose([A.RandomResizedCrop(), A.HorizontalFlip()])
    views = A.MultiView(pipeline, num_views=3)({"image": _images()})
    assert len(views) == 3
    assert not torch.equal(views[0]["image"], views[1]["image"])
    asymmetric = A.MultiView([A.Compose([A.GaussianBlur()]), A.Compose([A.Solarize()])])
    assert asymmetric.num_views == 2
    with pytest.raises(ValueError, match="num_views=3 but 2 pipelines"):
        A.MultiView([pipeline, pipeline], num_views=3)


def test_uint8_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expects float images \[B, C, H, W\] in \[0, 1\]"):
        A.HorizontalFlip()({"image": torch.zeros(2, 3, 4, 4, dtype=torch.uint8)})


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        (A.GaussianBlurParams, {"kernel_size": 4}, "kernel_size must be a positive odd number"),
        (A.GaussianBlurParams, {"sigma": [2.0, 1.0]}, "sigma must satisfy"),
        (A.RandomResizedCropParams, {"scale": [0.5, 1.5]}, "scale must satisfy"),
        (A.ColorJitterParams, {"hue": 0.7}, "less than or equal to 0.5"),
        (A.HorizontalFlipParams, {"p": -0.1}, "greater than or equal to 0"),
    ],
)
def test_params_validation(model, data, message):
    with pytest.raises(ValidationError, match=message):
        model.model_validate(data)


def test_blur_kernel_too_large_for_image():
    blur = A.GaussianBlur(A.GaussianBlurParams(kernel_size=9, p=1))
    with pytest.raises(ValueError, match="too large for 4x4 images"):
        blur({"image": torch.rand(2, 3, 4, 4)})
