"""The vision plugin registers its components through the hooks, and each builds from its defaults."""

from __future__ import annotations

import pytest
import torch

import sslhub_vision.plugin as vision_plugin
from sslhub import BuildContext, Catalog


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_modules(vision_plugin)


def test_registered_names_and_declarations(catalog):
    assert catalog.modalities.names() == ["image"]
    assert catalog.augmentations.names() == [
        "color_jitter",
        "gaussian_blur",
        "horizontal_flip",
        "random_grayscale",
        "random_resized_crop",
        "solarize",
    ]
    assert catalog.encoders.names() == ["small_cnn", "timm"]
    assert catalog.objectives.names() == ["inpainting", "simclr"]
    assert catalog.encoders.get("timm").provides == {"pooled", "spatial", "tokens", "patch_masking"}
    assert catalog.encoders.get("small_cnn").provides == {"pooled", "spatial"}
    assert catalog.objectives.get("inpainting").requires == {"spatial"}
    for registry in (catalog.augmentations, catalog.encoders, catalog.objectives):
        for component in registry:
            assert component.modalities == {"image"}, component.name
            assert component.description, component.name


def test_every_component_builds_from_defaults_and_runs(catalog):
    """Contract: defaults are valid and the pieces fit together on a tiny batch."""
    torch.manual_seed(0)
    modality_entry = catalog.modalities.get("image")
    modality = modality_entry.factory(modality_entry.params(image_size=16), BuildContext())
    context = BuildContext(modality=modality, modality_name="image")
    batch = modality.on_device(modality.collate([modality.train_dataset()[i] for i in range(4)]))
    for component in catalog.augmentations:
        out = component.factory(component.params(), context)(batch)
        assert out["image"].shape == batch["image"].shape, component.name
    encoder_entry = catalog.encoders.get("small_cnn")
    encoder = encoder_entry.factory(encoder_entry.params(), context)
    context.encoder = encoder
    for component in catalog.objectives:
        objective = component.factory(component.params(), context)
        views = [batch] * objective.num_views
        output = objective(views, encoder)
        assert output.loss.ndim == 0 and torch.isfinite(output.loss), component.name
