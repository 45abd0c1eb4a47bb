"""`sslhub predict` on image files: a classifier on a vision encoder gives PyTorch's probabilities."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from sslhub import BuildContext
from sslhub.export import export_classifier
from sslhub_vision.encoders.small_cnn import SmallCNN, SmallCNNParams
from sslhub_vision.modality import ImageModality, ImageParams
from sslhub_vision.sources import FolderImageDataset

CLASSES = ["plane", "car", "bird", "cat"]
# (height, width): at the model size (decoded exactly as in training), and non-square (resized)
SIZES = [(16, 16), (16, 16), (30, 21), (16, 16), (11, 13)]


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    paths = []
    for index, (height, width) in enumerate(SIZES):
        base = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.uint8)
        pixels = np.asarray(Image.fromarray(base).resize((width, height), Image.Resampling.BICUBIC))
        paths.append(folder / f"{index}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def _decode(path) -> torch.Tensor:
    """An image as the image modality decodes it in training: ``[3, 16, 16]`` in ``[0, 1]``."""
    return FolderImageDataset([path], image_size=16, channels=3).decode(str(path)).float() / 255.0


@pytest.fixture(scope="module")
def classifier(image_files, tmp_path_factory):
    modality = ImageModality(ImageParams(source={"type": "folder", "path": image_files[0].parent}, image_size=16))
    torch.manual_seed(0)
    encoder = SmallCNN(SmallCNNParams(width=8), BuildContext(modality=modality, modality_name="image")).eval()
    head = torch.nn.Linear(encoder.feature_dim, len(CLASSES))
    with torch.no_grad():
        # an untrained encoder's features differ little between images: spread the logits apart
        pooled = encoder({"image": torch.stack([_decode(p) for p in image_files])}).pooled
        head.weight.mul_(40.0)
        head.bias.copy_(-head(pooled).mean(0) + head.bias)
    out = tmp_path_factory.mktemp("finetune") / "model"
    report = export_classifier(encoder, head, modality, CLASSES, out)
    assert report["passed"]
    return encoder, head, out.parent


def test_predicting_image_files_gives_pytorchs_probabilities(image_files, classifier, tmp_path):
    encoder, head, finetune_dir = classifier
    # listed out of name order: rows follow the command line
    order = [image_files[i] for i in (3, 0, 4, 1, 2)]
    out = tmp_path / "predictions.csv"
    result = subprocess.run(
        [sys.executable, "-m", "sslhub", "predict", str(finetune_dir), *map(str, order), "--out", str(out),
         "--batch-size", "2", "--threads", "1"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "predicted 5 inputs (image)" in result.stdout

    with out.open(newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    images = torch.stack([_decode(p) for p in order])
    with torch.no_grad():
        expected = torch.softmax(head(encoder({"image": images}).pooled), dim=-1).numpy()
    got = np.array([row[2:] for row in rows], dtype=np.float64)
    assert len({row[1] for row in rows}) > 1, "the seeded head should not put every image in one class"
    assert [row[0] for row in rows] == [str(p) for p in order]
    exact = [i for i, p in enumerate(order) if SIZES[image_files.index(p)] == (16, 16)]
    np.testing.assert_allclose(got[exact], expected[exact], atol=1e-5)
    # Pillow and torch's antialiased bilinear resize agree up to rounding of single pixel values
    np.testing.assert_allclose(got, expected, atol=2e-2)
    assert [row[1] for row in rows] == [CLASSES[i] for i in got.argmax(1)]
    assert [CLASSES[i] for i in expected[exact].argmax(1)] == [rows[i][1] for i in exact]
