"""Registry: registration, lookup with suggestions, refusals with both providers named."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from sslhub import Component, Params, Provider, Registry, RegistryError
from sslhub.registry import ScopedRegistry

pytestmark = pytest.mark.usefixtures("sslhub_env")


class WidthParams(Params):
    width: int = Field(8, gt=0)


def make_encoder(params, context):
    """A stand-in encoder factory.

    Second docstring line, not part of the description.
    """
    return ("encoder", params)


def other_factory(params, context):
    return None


def test_register_then_get_returns_the_component_with_its_declarations():
    registry = Registry("encoder")
    returned = registry.register(
        "tiny_mlp",
        make_encoder,
        params=WidthParams,
        modalities=["toy"],
        provides=["tokens"],
        provider=Provider("mine", "my-dist", "2.0"),
    )

    component = registry.get("tiny_mlp")
    assert returned is make_encoder
    assert isinstance(component, Component)
    assert (component.kind, component.name, component.factory, component.params) == (
        "encoder",
        "tiny_mlp",
        make_encoder,
        WidthParams,
    )
    assert component.modalities == frozenset({"toy"})
    # every encoder gives pooled features, declared or not
    assert component.provides == frozenset({"pooled", "tokens"})
    assert component.description == "A stand-in encoder factory."
    assert component.qualname == f"{__name__}:make_encoder"
    assert str(component.provider) == "plugin 'mine' (my-dist 2.0)"
    assert component.supports("toy") and not component.supports("image")
    assert "tiny_mlp" in registry and len(registry) == 1
    assert [c.name for c in registry] == ["tiny_mlp"]


def test_component_without_modalities_supports_any_and_defaults_to_python_provider():
    registry = Registry("objective")
    registry.register("loss", other_factory, description="explicit line")
    component = registry.get("loss")
    assert component.supports("image") and component.supports("text")
    assert component.params is Params
    assert component.description == "explicit line"
    assert str(component.provider) == "plugin 'python'"


def test_decorator_form_registers_and_returns_the_function_unchanged():
    registry = Registry("augmentation")

    @registry.register("flip", params=WidthParams, modalities=["image"])
    def flip(params, context):
        """Flip things."""
        return params

    assert flip(1, None) == 1  # still the plain function
    component = registry.get("flip")
    assert component.factory is flip
    assert component.params is WidthParams
    assert component.modalities == frozenset({"image"})
    assert component.description == "Flip things."


def test_duplicate_registration_is_refused_naming_both_providers():
    registry = Registry("objective")
    registry.register("simclr", make_encoder, provider=Provider("vision", "sslhub", "0.1.0"))
    with pytest.raises(RegistryError) as info:
        registry.register("simclr", other_factory, provider=Provider("mine", "my-sslhub-extras", "1.0"))
    assert str(info.value) == (
        "objective 'simclr' is registered twice: by plugin 'vision' (sslhub 0.1.0) and by plugin 'mine' "
        "(my-sslhub-extras 1.0); block one with -p no:PLUGIN or SSLHUB_DISABLE_PLUGINS"
    )
    # the first registration is kept, not overwritten
    assert registry.get("simclr").factory is make_encoder


def test_duplicate_from_plain_python_names_the_python_provider():
    registry = Registry("encoder")
    registry.register("mlp", make_encoder, provider=Provider("toy_plugin"))
    with pytest.raises(
        RegistryError,
        match=r"^encoder 'mlp' is registered twice: by plugin 'toy_plugin' and by "
        r"plugin 'python'; block one",
    ):
        registry.register("mlp", other_factory)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("simclr_v2", "unknown objective 'simclr_v2'; did you mean 'simclr'?"),
        ("byol2", "unknown objective 'byol2'; did you mean 'byol'?"),
        ("mae_large", "unknown objective 'mae_large'; did you mean 'mae'?"),
        ("zzzz", "unknown objective 'zzzz'; known: byol, mae, simclr"),
    ],
)
def test_unknown_name_suggests_close_matches_or_lists_known(name, expected):
    registry = Registry("objective")
    for known in ("simclr", "byol", "mae"):
        registry.register(known, make_encoder)
    with pytest.raises(RegistryError) as info:
        registry.get(name)
    assert str(info.value) == expected
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no KeyError chained


def test_unknown_name_in_an_empty_registry_hints_at_a_missing_plugin():
    registry = Registry("modality")
    with pytest.raises(RegistryError) as info:
        registry.get("image")
    assert str(info.value) == "unknown modality 'image'; no modalities are registered (is a plugin missing?)"


def test_unknown_name_with_a_hint_names_the_plugin_that_would_provide_it():
    registry = Registry("encoder")
    registry.hints["timm"] = "plugin 'vision' (sslhub 0.1.0)"
    assert registry.unknown_message("timm") == (
        "unknown encoder 'timm'; it is provided by plugin 'vision' (sslhub 0.1.0), which is not installed or "
        "failed to load"
    )


@pytest.mark.parametrize("bad_name", ["SimCLR", "my-objective", "two words", "", "1st", "a.b", 7, None])
def test_names_must_be_snake_case_identifiers(bad_name):
    registry = Registry("objective")
    with pytest.raises(RegistryError) as info:
        registry.register(bad_name, make_encoder, provider=Provider("mine"))
    assert str(info.value) == (
        f"plugin 'mine' tried to register objective {bad_name!r}: names must be snake_case identifiers"
    )
    assert len(registry) == 0


class NotParams(BaseModel):
    width: int = 3


@pytest.mark.parametrize("bad_params", [NotParams, dict, WidthParams(), "WidthParams"])
def test_params_must_be_a_params_subclass(bad_params):
    registry = Registry("encoder")
    with pytest.raises(RegistryError) as info:
        registry.register("mlp", make_encoder, params=bad_params, provider=Provider("mine", "mine-dist", "0.1"))
    assert str(info.value) == (
        f"plugin 'mine' (mine-dist 0.1) registered encoder 'mlp' with params={bad_params!r}; "
        "it must be a subclass of sslhub.Params"
    )


def test_factory_must_be_callable():
    registry = Registry("encoder")
    with pytest.raises(RegistryError) as info:
        registry.register("mlp", "not callable")
    assert str(info.value) == "plugin 'python' registered encoder 'mlp' with a non-callable factory"


@pytest.mark.parametrize(("keyword", "feature"), [("provides", "patches"), ("requires", "Tokens")])
def test_unknown_feature_kinds_are_refused(keyword, feature):
    registry = Registry("encoder" if keyword == "provides" else "objective")
    with pytest.raises(RegistryError) as info:
        registry.register("thing", make_encoder, **{keyword: [feature]})
    assert str(info.value) == (
        f"plugin 'python' registered {registry.kind} 'thing' with unknown capability {feature!r}; "
        "expected one of pooled, tokens, spatial, causal, token_embeddings, frame_masking, patch_masking, frame_layers"
    )


def test_unknown_registry_kind_is_a_value_error():
    with pytest.raises(ValueError, match=r"unknown component kind 'objectives'"):
        Registry("objectives")


def test_names_lists_sorted_and_filters_by_wildcard():
    registry = Registry("augmentation")
    for name in ("random_resized_crop", "color_jitter", "random_grayscale", "horizontal_flip", "time_mask"):
        registry.register(name, make_encoder)
    assert registry.names() == [
        "color_jitter",
        "horizontal_flip",
        "random_grayscale",
        "random_resized_crop",
        "time_mask",
    ]
    assert registry.names("random_*") == ["random_grayscale", "random_resized_crop"]
    assert registry.names("*_mask") == ["time_mask"]
    assert registry.names("?ime_*") == ["time_mask"]
    assert registry.names("RANDOM_*") == []  # case-sensitive, like the names themselves
    assert registry.names("nothing*") == []


def test_scoped_registry_attributes_registrations_to_its_plugin():
    registry = Registry("objective")
    added: list[Component] = []
    provider = Provider("vision", "sslhub", "0.1.0")
    scoped = ScopedRegistry(registry, provider, added)

    scoped.register("simclr", make_encoder, params=WidthParams)

    @scoped.register("byol", requires=["spatial"])
    def byol(params, context):
        return None

    assert [c.name for c in added] == ["simclr", "byol"]
    assert registry.get("simclr").provider == provider
    assert registry.get("byol").provider == provider
    assert registry.get("byol").requires == frozenset({"spatial"})
    assert "byol" in scoped and scoped.names("s*") == ["simclr"]
    # a plugin cannot claim to be someone else
    scoped.register("mae", make_encoder, provider=Provider("impostor"))
    assert registry.get("mae").provider == provider


def test_unknown_name_names_a_plugin_that_did_not_load():
    registry = Registry("encoder")
    registry.unavailable = ["plugin 'vision' of sslhub is blocked"]
    assert registry.unknown_message("small_cnn") == (
        "unknown encoder 'small_cnn'; no encoders are registered (is a plugin missing?); "
        "plugin 'vision' of sslhub is blocked and may provide it (see `sslhub plugins`)"
    )


def test_modalities_declare_modality_capabilities_only():
    registry = Registry("modality")
    registry.register("words", make_encoder, provides=["word_continuations"])
    assert "word_continuations" in registry.get("words").provides
    with pytest.raises(RegistryError) as info:
        registry.register("pixels", make_encoder, provides=["tokens"])
    assert str(info.value) == (
        "plugin 'python' registered modality 'pixels' with unknown capability 'tokens'; "
        "expected one of pooled, word_continuations"
    )
