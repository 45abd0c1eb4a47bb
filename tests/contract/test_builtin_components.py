"""Contract tests over every component the built-in plugins register, driven by the registry."""

from __future__ import annotations

import os

import pytest
import torch

from sslhub.testing import build_components, catalog_with, check_augmentation, check_encoder, check_objective_learns

os.environ.setdefault("HF_HUB_OFFLINE", "1")
BUILTIN_PLUGINS = (
    "sslhub_vision.plugin",
    "sslhub_text.plugin",
    "sslhub_audio.plugin",
    "sslhub_autoencoder.plugin",
    "sslhub_multimodal.plugin",
)
CATALOG = catalog_with(*BUILTIN_PLUGINS)
# The smallest encoder per modality, for augmentation and objective checks.
SMALL_ENCODER = {
    "image": "small_cnn",
    "text": "hf",
    "audio": "frame_transformer",
    "tabular": "mlp",
    "image_text": {"image": "small_cnn", "text": "hf"},
}

# Objectives whose needs the small encoders do not meet: (encoder, per-component params).
OBJECTIVE_SETUP = {
    "apc": ("causal_frame_transformer", {"causal_frame_transformer": {"d_model": 32, "num_layers": 1}}),
    "causal_lm": ("hf_causal", {}),
    "mae": (
        "timm",
        {
            "timm": {
                "model": "vit_tiny_patch16_224",
                "model_kwargs": {"patch_size": 8, "depth": 1, "embed_dim": 48, "num_heads": 3},
            }
        },
    ),
}


def first_modality(component) -> str:
    return sorted(component.modalities)[0] if component.modalities else "image"


@pytest.mark.parametrize("name", CATALOG.encoders.names())
def test_encoder_reports_its_features_truthfully(name):
    component = CATALOG.encoders.get(name)
    modality_name = first_modality(component)
    modality, encoder, _, _ = build_components(CATALOG, modality=modality_name, encoder=name)
    encoder.eval()
    with torch.no_grad():
        check_encoder(encoder, modality.on_device(modality.example_batch(2)))
    assert set(encoder.provides) <= set(component.provides)


@pytest.mark.parametrize("name", CATALOG.augmentations.names())
def test_augmentation_keeps_shapes_and_dtypes(name):
    component = CATALOG.augmentations.get(name)
    modality_name = first_modality(component)
    encoder_name = SMALL_ENCODER[modality_name]
    modality, _, _, augmentations = build_components(
        CATALOG, modality=modality_name, encoder=encoder_name, augment=[name]
    )
    check_augmentation(augmentations[0], modality.on_device(modality.example_batch(4)))


@pytest.mark.parametrize("name", CATALOG.objectives.names())
def test_objective_learns_on_a_tiny_batch(name):
    component = CATALOG.objectives.get(name)
    modality_name = first_modality(component)
    encoder_name = SMALL_ENCODER[modality_name]
    params = {}
    if component.encoder_slots:
        encoder_name = {slot: SMALL_ENCODER[slot] for slot in sorted(component.encoder_slots)}
    if name in OBJECTIVE_SETUP:
        encoder_name, params = OBJECTIVE_SETUP[name]
    modality, encoder, objective, _ = build_components(
        CATALOG, modality=modality_name, encoder=encoder_name, objective=name, params=params
    )
    torch.manual_seed(0)
    batches = [modality.on_device(modality.collate([modality.train_dataset()[i] for i in range(8)]))]
    check_objective_learns(objective, encoder, batches, steps=25, lr=2e-3)


# Encoders exported in more than their default form: (encoder, per-component params).
EXPORT_VARIANTS = {name: (name, {}) for name in CATALOG.encoders.names()}
EXPORT_VARIANTS["timm_vit"] = OBJECTIVE_SETUP["mae"]


@pytest.mark.parametrize("variant", sorted(EXPORT_VARIANTS))
@pytest.mark.slow
def test_encoder_exports_to_verified_onnx(variant, tmp_path):
    """sslhub's own export path (dynamic axes, metadata, onnxruntime vs PyTorch) on every family."""
    from sslhub.export import export_encoder

    name, params = EXPORT_VARIANTS[variant]
    modality_name = first_modality(CATALOG.encoders.get(name))
    modality, encoder, _, _ = build_components(CATALOG, modality=modality_name, encoder=name, params=params)
    report = export_encoder(encoder, modality, tmp_path, modality_name=modality_name, export_frontend=False)
    assert report.passed and report.max_abs_diff <= 1e-4, report.summary()
    assert report.metadata["input_spec"]["input_names"] == list(encoder.input_names)


@pytest.mark.parametrize("variant", sorted(EXPORT_VARIANTS))
def test_encoder_reloads_from_its_weights_export(variant, tmp_path):
    """sslhub export --format safetensors,native, then sslhub.load_encoder on the folder alone, on every family."""
    from sslhub import EncoderSet, load_encoder
    from sslhub.export_formats import EncoderDescription, write_weight_formats

    name, params = EXPORT_VARIANTS[variant]
    modality_name = first_modality(CATALOG.encoders.get(name))
    modality, encoder, _, _ = build_components(CATALOG, modality=modality_name, encoder=name, params=params)
    encoder.eval()
    own = CATALOG.encoders.get(name).params.model_validate(params.get(name, {})).model_dump(mode="json")
    description = EncoderDescription(name, own, modality_name, seed=0)
    formats = ("safetensors", "native")
    result = write_weight_formats(
        EncoderSet({"default": encoder}), modality, {"default": description}, tmp_path, formats
    )
    native = result["encoder"]["native"]
    if native:  # what export_native says it wrote is what the folder holds
        assert sorted(p.name for p in (tmp_path / "native").iterdir()) == sorted(native)
    loaded = load_encoder(tmp_path)
    batch = modality.on_device(modality.example_batch(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), encoder(batch).pooled)


FRAME_MASKING_ENCODERS = [
    name for name in CATALOG.encoders.names() if "frame_masking" in CATALOG.encoders.get(name).provides
]


@pytest.mark.parametrize("name", FRAME_MASKING_ENCODERS)
def test_frame_masking_encoder_splits_its_forward_pass(name):
    """``frame_masking``: embed_frames then transform_frames is the forward pass, with count_frames frames."""
    modality_name = first_modality(CATALOG.encoders.get(name))
    modality, encoder, _, _ = build_components(CATALOG, modality=modality_name, encoder=name)
    batch = modality.on_device(modality.example_batch(2))
    encoder.eval()
    with torch.no_grad():
        frames = encoder.embed_frames(batch)
        assert frames.shape == (2, encoder.count_frames(batch), encoder.feature_dim)
        torch.testing.assert_close(encoder.transform_frames(frames).tokens, encoder(batch).tokens)
