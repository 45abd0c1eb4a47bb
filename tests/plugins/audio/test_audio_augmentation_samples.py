"""AudioModality.augmentation_samples: spectrograms of each clip and its views for the run report."""

from __future__ import annotations

import torch

from sslhub_audio.modality import AudioModality


def test_each_row_is_a_clip_then_its_views_low_bands_at_the_bottom():
    features = torch.randn(2, 8, 20)
    masked = features.clone()
    masked[:, :, 5:10] = features.min()
    grid = AudioModality.augmentation_samples(None, {"features": features}, [{"features": masked}])["spectrograms"]
    assert grid.dtype == torch.uint8 and grid.shape == (2 * 12 * 2, 2 * 24 * 2)
    row = grid[: 12 * 2 : 2, ::2].float() / 255  # undo the 2x enlargement
    low, high = features[0].min(), features[0].max()
    expected = ((features[0] - low) / (high - low)).flip(0)
    assert torch.allclose(row[2:10, 2:22], expected, atol=1 / 255)
    assert int(row[2:10, 24 + 2 + 5 : 24 + 2 + 10].max()) == 0  # the masked frames of the view are black
