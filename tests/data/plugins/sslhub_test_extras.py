"""A local plugin module (loaded with ``-p sslhub_test_extras``) for recipe compatibility tests.

Its components declare needs the toy plugin cannot meet: an objective that needs token
features, an augmentation for another modality, and an objective whose parameters nest a
model. They are only validated against recipes, never built.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from sslhub import Params, hookimpl


def _validation_only(params, context):
    """Stand-in factory: these components exist to be validated, not built."""
    raise NotImplementedError("sslhub_test_extras components are for recipe validation tests only")


class TokenPredictionParams(Params):
    mask_ratio: float = Field(0.15, gt=0, lt=1, description="fraction of tokens to predict")


class TokenEncoderParams(Params):
    width: int = Field(8, gt=0, description="token feature size")


class FakeFlipParams(Params):
    p: float = Field(0.5, ge=0, le=1, description="probability of flipping a sample")


class ExtrasHeadSpec(BaseModel):
    """A nested parameter block (makes the component's JSON schema carry $defs)."""

    hidden: int = Field(32, gt=0)
    layers: int = Field(2, ge=1)


class NestedHeadParams(Params):
    head: ExtrasHeadSpec = Field(default_factory=ExtrasHeadSpec, description="projection head shape")


@hookimpl
def sslhub_register_augmentations(registry):
    registry.register("fake_image_flip", _validation_only, params=FakeFlipParams, modalities=["fake_image"])


@hookimpl
def sslhub_register_encoders(registry):
    registry.register(
        "toy_token_mlp",
        _validation_only,
        params=TokenEncoderParams,
        modalities=["toy_vectors"],
        provides=["pooled", "tokens"],
    )


@hookimpl
def sslhub_register_objectives(registry):
    registry.register("token_predictor", _validation_only, params=TokenPredictionParams, requires=["tokens"])
    registry.register("nested_head", _validation_only, params=NestedHeadParams)
