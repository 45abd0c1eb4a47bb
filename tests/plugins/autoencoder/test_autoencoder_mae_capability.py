"""mae runs a ViT on the visible patches only: a declared encoder capability (``patch_masking``),
checked at validation, and what the timm encoder gives only when its model can."""

from __future__ import annotations

import pytest

from sslhub import BuildContext
from sslhub.errors import RecipeError
from sslhub.recipe import resolve_recipe
from sslhub.recipe_yaml import load_recipe_text
from sslhub.testing import catalog_with
from sslhub_vision.encoders.timm_encoder import TimmEncoder, TimmParams
from sslhub_vision.modality import ImageModality, ImageParams


def test_validation_refuses_mae_on_an_encoder_without_patch_masking():
    catalog = catalog_with("sslhub_vision.plugin", "sslhub_autoencoder.plugin")
    text = "name: x\ndata: {modality: image}\nencoder: {name: small_cnn}\nobjectives: [{name: mae}]\n"
    with pytest.raises(RecipeError) as error:
        resolve_recipe(load_recipe_text(text, "bad.yaml"), catalog)
    message = str(error.value)
    assert "bad.yaml:4" in message and "objective 'mae' needs an encoder that can encode a subset" in message
    assert "encoder 'small_cnn' does not declare provides=['patch_masking']" in message


@pytest.mark.parametrize(
    ("model", "kwargs", "has_it"),
    [("vit_tiny_patch16_224", {"patch_size": 4}, True), ("resnet18", {}, False)],
)
def test_timm_declares_patch_masking_only_for_a_fixed_grid_vit(model, kwargs, has_it):
    context = BuildContext(modality=ImageModality(ImageParams(image_size=16)), modality_name="image")
    encoder = TimmEncoder(TimmParams(model=model, model_kwargs=kwargs), context)
    assert ("patch_masking" in encoder.provides) is has_it
    if has_it:
        layout = encoder.patch_layout()
        assert (layout.patch_size, layout.grid, layout.prefix_tokens, layout.dim) == (4, (4, 4), 1, 192)
    else:
        with pytest.raises(ValueError, match="cannot encode a subset of patches: it is not a transformer"):
            encoder.patch_layout()
