"""In-memory image arrays: a whole batch is made in one pass, with exactly the one-image result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sslhub_vision.sources import ArrayImageDataset, adapt_channels, resize_center_crop


def one_image_at_a_time(images: np.ndarray, row: int, size: int, channels: int) -> torch.Tensor:
    array = images[row] if images.ndim == 4 else images[row][:, :, None]
    image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    return resize_center_crop(adapt_channels(image, channels), size)


@pytest.mark.parametrize(
    ("shape", "size", "channels"),
    [
        ((12, 37, 53, 3), 16, 1),  # shrink a wide RGB image to gray
        ((12, 8, 8), 32, 3),  # upsample gray to RGB
        ((12, 40, 30, 4), 24, 3),  # drop alpha, tall image
        ((12, 32, 32, 3), 32, 3),  # already the right size: indexing only
        ((12, 9, 13, 2), 20, 1),  # gray + alpha
    ],
)
def test_batch_matches_each_image_made_alone(shape, size, channels):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=shape, dtype=np.uint8)
    labels = rng.integers(0, 5, size=shape[0])
    indices = rng.permutation(shape[0])[:8]
    dataset = ArrayImageDataset(images, indices, size, channels, labels)

    batch = dataset.__getitems__([5, 0, 7, 0])

    for sample, position in zip(batch, [5, 0, 7, 0], strict=True):
        row = int(indices[position])
        expected = one_image_at_a_time(images, row, size, channels)
        assert sample["image"].shape == (channels, size, size) and sample["image"].dtype == torch.uint8
        assert torch.equal(sample["image"], expected)
        assert sample["label"].dtype == torch.int64 and int(sample["label"]) == int(labels[row])
    assert torch.equal(dataset[7]["image"], batch[2]["image"])


def test_dataloader_batches_are_the_per_index_samples_stacked():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(40, 20, 20, 3), dtype=np.uint8)
    dataset = ArrayImageDataset(images, np.arange(40), 16, 3)  # no labels: samples hold the image alone

    (batch,) = list(DataLoader(dataset, batch_size=40, shuffle=False))

    assert set(batch) == {"image"}
    assert torch.equal(batch["image"], torch.stack([dataset[i]["image"] for i in range(40)]))
    assert torch.equal(batch["image"][3], one_image_at_a_time(images, 3, 16, 3))
