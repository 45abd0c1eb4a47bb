"""The image modality: embedded digits, folder and numpy sources, splits, device conversion, spec."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from torch.utils.data import DataLoader

from sslhub_vision.modality import ImageModality, ImageParams


@pytest.fixture(scope="module")
def digits() -> ImageModality:
    return ImageModality(ImageParams(image_size=16, eval_fraction=0.25))


def test_digits_samples_are_uint8_images_of_the_requested_size(digits):
    sample = digits.train_dataset()[0]
    assert set(sample) == {"image"}
    assert sample["image"].dtype == torch.uint8
    assert sample["image"].shape == (3, 16, 16)
    # gray digits replicated to RGB, with real strokes (0..16 scaled to 0..255)
    assert torch.equal(sample["image"][0], sample["image"][1])
    assert sample["image"].max() > 150


def test_digits_split_is_deterministic_disjoint_and_labeled(digits):
    split = digits.eval_split()
    train, test = split.train, split.test
    assert len(train) + len(test) == 1797
    assert len(digits.train_dataset()) == len(train)
    assert abs(len(test) / 1797 - 0.25) < 0.01
    assert list(split.class_names) == [str(i) for i in range(10)]
    # stratified: every class is in the test split
    assert {int(test[i]["label"]) for i in range(len(test))} == set(range(10))
    again = ImageModality(ImageParams(image_size=16, eval_fraction=0.25)).eval_split()
    assert torch.equal(again.test[5]["image"], test[5]["image"])
    train_images = {bytes(train[i]["image"].numpy()) for i in range(len(train))}
    test_images = [bytes(test[i]["image"].numpy()) for i in range(len(test))]
    # a few digit bitmaps are duplicated in the raw data; almost none may overlap
    assert sum(img in train_images for img in test_images) < 10


def test_different_split_seed_changes_the_split():
    a = ImageModality(ImageParams(image_size=8, split_seed=0)).eval_split().test
    b = ImageModality(ImageParams(image_size=8, split_seed=1)).eval_split().test
    assert any(not torch.equal(a[i]["image"], b[i]["image"]) for i in range(20))


def test_collate_on_device_and_dataloader_workers(digits):
    loader = DataLoader(digits.train_dataset(), batch_size=8, collate_fn=digits.collate)
    batch = digits.on_device(next(iter(loader)))
    assert batch["image"].dtype == torch.float32
    assert batch["image"].shape == (8, 3, 16, 16)
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    pickle.loads(pickle.dumps(digits.train_dataset()))  # DataLoader workers need this


def test_info_spec_and_example_batch(digits):
    assert digits.info().channels == 3 and digits.info().image_size == 16
    spec = digits.input_spec()
    assert spec["inputs"]["image"] == {"dtype": "float32", "shape": ["batch", 3, 16, 16]}
    assert spec["dynamic_axes"] == {"image": {0: "batch"}}
    pre = spec["preprocessing"]
    assert pre["normalization"] == "inside_model"
    assert pre["value_range"] == [0.0, 1.0]
    assert pre["mean"] == pytest.approx([0.485, 0.456, 0.406])
    example = digits.example_batch(3)
    assert example["image"].shape == (3, 3, 16, 16) and example["image"].dtype == torch.float32
    assert digits.fingerprint().startswith("sklearn-digits:")


def _write_image(path, color, size=(20, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_folder_source_labels_from_subfolders_and_skips_corrupt_files(tmp_path, caplog):
    for i in range(6):
        _write_image(tmp_path / "cats" / f"c{i}.png", (200, 10, 10))
        _write_image(tmp_path / "dogs" / "nested" / f"d{i}.jpg", (10, 10, 200))
    (tmp_path / "dogs" / "broken.png").write_bytes(b"this is not a png")
    (tmp_path / "cats" / "empty.jpg").write_bytes(b"")
    (tmp_path / "cats" / "notes.txt").write_text("ignored: not an image extension")
    params = ImageParams.model_validate(
        {"source": {"type": "folder", "path": str(tmp_path)}, "image_size": 8, "eval_fraction": 0.34}
    )
    modality = ImageModality(params)
    with caplog.at_level(logging.WARNING, logger="sslhub"):
        modality.prepare(None)
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 2 unreadable" in warning
    assert "broken.png" in warning and "empty.jpg" in warning
    split = modality.eval_split()
    assert split.class_names == ("cats", "dogs")
    assert len(split.train) + len(split.test) == 12
    sample = split.test[0]
    assert sample["image"].shape == (3, 8, 8)
    # colour decides the class: red cats, blue dogs
    red = sample["image"][0].float().mean() > sample["image"][2].float().mean()
    assert red == (int(sample["label"]) == 0)
    assert modality.fingerprint().startswith("folder:")


def test_folder_file_that_breaks_at_decode_time_is_replaced_not_fatal(tmp_path, caplog):
    for i in range(3):
        _write_image(tmp_path / f"img{i}.png", (i * 50, 0, 0))
    modality = ImageModality(
        ImageParams.model_validate({"source": {"type": "folder", "path": str(tmp_path)}, "image_size": 8})
    )
    dataset = modality.train_dataset()
    assert modality.eval_split() is None  # images directly in the root: no labels
    # corrupt a file after the scan accepted it
    (tmp_path / "img0.png").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="sslhub"):
        sample = dataset[0]
    assert sample["image"].shape == (3, 8, 8)
    assert "img0.png" in caplog.text


def test_folder_source_errors_are_clear(tmp_path):
    missing = ImageModality(ImageParams.model_validate({"source": {"type": "folder", "path": str(tmp_path / "no")}}))
    with pytest.raises(ValueError, match="is not a directory"):
        missing.train_dataset()
    (tmp_path / "bad.png").write_bytes(b"x")
    empty = ImageModality(ImageParams.model_validate({"source": {"type": "folder", "path": str(tmp_path)}}))
    with pytest.raises(ValueError, match=r"no readable images .* \(1 unreadable\)"):
        empty.train_dataset()


def test_numpy_source_with_labels_and_resizing(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 10, 14, 3), dtype=np.uint8)
    labels = np.array(["a", "b"] * 20)
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    params = ImageParams.model_validate(
        {"source": {"type": "numpy", "path": str(tmp_path / "data.npz")}, "image_size": 8}
    )
    modality = ImageModality(params)
    split = modality.eval_split()
    assert split.class_names == ("a", "b")
    assert len(split.test) == 8
    assert split.train[0]["image"].shape == (3, 8, 8)
    assert split.train[0]["label"].dtype == torch.int64

    np.savez(tmp_path / "nolabels.npz", images=images[:, :8, :8])
    unlabeled = ImageModality(
        ImageParams.model_validate(
            {"source": {"type": "numpy", "path": str(tmp_path / "nolabels.npz")}, "image_size": 8}
        )
    )
    assert unlabeled.eval_split() is None
    first = unlabeled.train_dataset()[0]["image"]
    assert torch.equal(first, torch.from_numpy(images[0, :8, :8]).permute(2, 0, 1))


def test_numpy_source_rejects_wrong_dtype(tmp_path):
    np.savez(tmp_path / "f.npz", images=np.zeros((2, 4, 4, 3), dtype=np.float32))
    modality = ImageModality(ImageParams.model_validate({"source": {"type": "numpy", "path": str(tmp_path / "f.npz")}}))
    with pytest.raises(ValueError, match="'images' must be uint8"):
        modality.train_dataset()


def test_gray_channel_mode(tmp_path):
    modality = ImageModality(ImageParams(channels=1, image_size=8))
    assert modality.train_dataset()[0]["image"].shape == (1, 8, 8)
    assert len(modality.info().mean) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"source": {"type": "s3"}}, "does not match any of the expected tags"),
        ({"image_size": 0}, "greater than or equal to 8"),
        ({"eval_fraction": 1.0}, "less than 1"),
        ({"mean": [0.5, 0.5]}, "mean must have 1 or channels=3 values"),
        ({"std": [0.0]}, "std values must be > 0"),
        ({"colour": 3}, "Extra inputs are not permitted"),
    ],
)
def test_params_validation_messages(data, message):
    with pytest.raises(ValidationError, match=message):
        ImageParams.model_validate(data)


def test_raw_pixels_are_a_small_normalised_image_and_classify_digits(digits):
    from sslhub.testing import check_raw_features

    image = torch.rand(2, 3, 16, 16)
    raw = digits.raw_features({"image": image})
    assert raw.shape == (2, 3 * 16 * 16)  # 768 <= the 1024-value budget: full resolution
    mean = torch.tensor(digits.mean).view(1, 3, 1, 1)
    std = torch.tensor(digits.std).view(1, 3, 1, 1)
    assert torch.allclose(raw, ((image - mean) / std).flatten(1))
    big = ImageModality(ImageParams(image_size=64))
    pooled = big.raw_features({"image": torch.ones(1, 3, 64, 64)})
    assert pooled.shape == (1, 3 * 18 * 18)  # area-averaged down to fit the budget
    scores = check_raw_features(digits)
    assert scores[""] > 0.7  # ten classes: chance is 0.1
