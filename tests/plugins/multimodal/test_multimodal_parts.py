"""image_text is a composite of the registered image and text modalities, built by name: its parts
come from whichever plugins the run loaded, and a missing or misconfigured part is a recipe error."""

from __future__ import annotations

from pathlib import Path

import pytest
from toy_runs import sslhub

from sslhub import BuildContext, SSLHubError
from sslhub.testing import catalog_with
from sslhub_multimodal.modality import ImageTextModality, ImageTextParams

RECIPE = str(Path(__file__).resolve().parents[3] / "recipes" / "image_text_clip.yaml")


def test_parts_are_the_modalities_the_catalog_registers():
    catalog = catalog_with("sslhub_vision.plugin", "sslhub_text.plugin", "sslhub_multimodal.plugin")
    modality = ImageTextModality(ImageTextParams(image_size=8, max_length=12), BuildContext(catalog=catalog))
    registered = catalog.registry("modality")
    assert set(modality.parts) == {"image", "text"}
    for name, part in modality.parts.items():
        assert type(part) is registered.get(name).factory
    # each part got the composite's settings as its own parameters
    assert modality.parts["image"].info().image_size == 8
    modality.prepare(None)
    assert modality.info().max_length == modality.parts["text"].info().max_length == 12


def test_a_catalog_without_the_image_modality_cannot_build_image_text():
    catalog = catalog_with("sslhub_text.plugin", "sslhub_multimodal.plugin")
    with pytest.raises(SSLHubError, match="modality 'image_text' needs the 'image' modality for its image part"):
        ImageTextModality(ImageTextParams(), BuildContext(catalog=catalog))


def test_blocking_vision_says_image_text_needs_the_image_modality():
    result = sslhub("validate", RECIPE, "-p", "no:vision")
    assert result.returncode != 0
    assert "data.modality: modality 'image_text' needs the 'image' modality for its image part" in result.stderr
    assert "plugin 'vision' of sslhub is blocked" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.mean=[0.5, 0.5]", "data.mean: mean must have 1 or channels=3 values, got 2 (in the image part"),
        ("data.tokenizer.vocab_size=10", "data.tokenizer.vocab_size: Input should be greater than or equal to 64"),
    ],
)
def test_part_parameters_are_refused_at_their_recipe_field(override, expected):
    result = sslhub("validate", RECIPE, "--set", override)
    assert result.returncode != 0 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_composite_built_from_a_catalog_pickles_for_spawned_workers():
    import pickle

    catalog = catalog_with("sslhub_vision.plugin", "sslhub_text.plugin", "sslhub_multimodal.plugin")
    modality = ImageTextModality(ImageTextParams(image_size=8, max_length=12), BuildContext(catalog=catalog))
    modality.prepare(None)
    copy = pickle.loads(pickle.dumps(modality))  # the catalog (plugin modules) stays behind
    samples = [copy.train_dataset()[i] for i in range(3)]
    assert copy.collate(samples)["image"].shape == (3, 3, 8, 8)
