"""The timm encoder's native export loads in timm itself, and its export folder in sslhub.load_encoder."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import sslhub
from sslhub import BuildContext, EncoderSet
from sslhub.export_formats import EncoderDescription, write_weight_formats
from sslhub_vision.encoders import TimmEncoder, TimmParams
from sslhub_vision.modality import ImageModality, ImageParams

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def modality() -> ImageModality:
    return ImageModality(ImageParams(image_size=32))


def _encoder(modality: ImageModality, params: TimmParams) -> TimmEncoder:
    torch.manual_seed(0)
    return TimmEncoder(params, BuildContext(modality=modality, modality_name="image")).eval()


def _timm_from_native(directory, seed: int = 123) -> torch.nn.Module:
    """timm's own model from the files export_native wrote, as a user would build it."""
    config = json.loads((directory / "timm_config.json").read_text())
    torch.manual_seed(seed)  # another random init: only the file can make the outputs agree
    overlay = dict(file=str(directory / "model.safetensors"), **config["pretrained_cfg"])
    return timm.create_model(
        config["model"], pretrained=True, pretrained_cfg_overlay=overlay, **config["kwargs"]
    ).eval()


@pytest.mark.parametrize("model", ["test_resnet", "test_vit"])
def test_timm_loads_the_native_weights_and_gives_the_pooled_features(model, modality, tmp_path):
    encoder = _encoder(modality, TimmParams(model=model))
    written = encoder.export_native(tmp_path, modality)
    assert set(written) == {"model.safetensors", "timm_config.json"}
    native = _timm_from_native(tmp_path)
    images = torch.rand(3, 3, 32, 32)
    normalised = (images - torch.tensor(encoder.mean).view(1, 3, 1, 1)) / torch.tensor(encoder.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = encoder({"image": images}).pooled
        torch.testing.assert_close(native(normalised), expected)
        features = native.forward_features(normalised)
        torch.testing.assert_close(native.forward_head(features, pre_logits=True), expected)
    config = timm.data.resolve_data_config(model=native)
    assert list(config["mean"]) == pytest.approx(encoder.mean) and tuple(config["input_size"]) == (3, 32, 32)


def test_a_random_timm_model_differs(modality, tmp_path):
    """The comparison above can fail: the same architecture without the file gives other features."""
    encoder = _encoder(modality, TimmParams(model="test_resnet"))
    torch.manual_seed(123)
    kwargs = json.loads(json.dumps(encoder.create_kwargs))
    random = timm.create_model("test_resnet", pretrained=False, **kwargs).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(random(encoder.normalize(images)), encoder({"image": images}).pooled, atol=1e-3)


def test_cifar_stem_has_no_native_export(modality, tmp_path):
    encoder = _encoder(modality, TimmParams(model="test_resnet", cifar_stem=True))
    assert encoder.export_native(tmp_path, modality) == {}
    assert list(tmp_path.iterdir()) == []


def test_export_folder_loads_with_load_encoder_and_preprocesses_images(modality, tmp_path):
    params = TimmParams(model="test_resnet")
    encoder = _encoder(modality, params)
    description = EncoderDescription("timm", params.model_dump(mode="json"), "image", seed=0)
    results = write_weight_formats(
        EncoderSet({"default": encoder}), modality, {"default": description}, tmp_path, ("safetensors", "native")
    )
    assert results["encoder"]["native"] and (tmp_path / "native" / "model.safetensors").is_file()
    record = json.loads((tmp_path / "encoder.json").read_text())
    assert record["formats"] == ["safetensors", "native"]
    loaded = sslhub.load_encoder(tmp_path)
    picture = tmp_path / "picture.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(picture)
    inputs = loaded.preprocess([picture])
    assert inputs["image"].shape == (1, 3, 32, 32) and 0 <= inputs["image"].min() <= inputs["image"].max() <= 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), encoder(inputs).pooled)
        torch.testing.assert_close(loaded(inputs["image"]), encoder(inputs).pooled)


def test_an_export_without_native_removes_an_earlier_native_folder(modality, tmp_path):
    params = TimmParams(model="test_resnet")
    description = {"default": EncoderDescription("timm", params.model_dump(mode="json"), "image", seed=0)}
    encoders = EncoderSet({"default": _encoder(modality, params)})
    write_weight_formats(encoders, modality, description, tmp_path, ("safetensors", "native"))
    assert (tmp_path / "native" / "model.safetensors").is_file()
    write_weight_formats(encoders, modality, description, tmp_path, ("safetensors",))
    assert not (tmp_path / "native").exists()
    assert json.loads((tmp_path / "encoder.json").read_text())["native"] == {}
