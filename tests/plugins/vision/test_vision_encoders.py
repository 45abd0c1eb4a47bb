"""Image encoders: small_cnn and timm build, report their features truthfully and export to ONNX."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from sslhub import BuildContext
from sslhub_vision.encoders import Normalize, SmallCNN, SmallCNNParams, TimmEncoder, TimmParams
from sslhub_vision.encoders.pooling import GlobalAveragePool, SpatialPyramidPool
from sslhub_vision.modality import ImageModality, ImageParams

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def context() -> BuildContext:
    return BuildContext(modality=ImageModality(ImageParams(image_size=32)), modality_name="image")


def test_small_cnn_shapes_and_provides(context):
    encoder = SmallCNN(SmallCNNParams(width=8, stages=3), context)
    out = encoder(context.modality.example_batch(2))
    assert encoder.feature_dim == 32
    assert encoder.provides == {"pooled", "spatial"}
    assert out.pooled.shape == (2, 32)
    assert out.spatial.shape == (2, 32, 8, 8)
    torch.testing.assert_close(out.pooled, out.spatial.mean(dim=(2, 3)))


def test_small_cnn_pyramid_pool_keeps_the_layout(context):
    encoder = SmallCNN(SmallCNNParams(width=8, stages=3, pool="pyramid", pyramid_levels=[1, 2]), context)
    out = encoder(context.modality.example_batch(2))
    assert encoder.feature_dim == 32 * 5 and out.pooled.shape == (2, 160)
    spatial = out.spatial  # [2, 32, 8, 8]
    torch.testing.assert_close(out.pooled[:, :32], spatial.mean(dim=(2, 3)))
    top_left = spatial[:, :, :4, :4].mean(dim=(2, 3))
    torch.testing.assert_close(out.pooled[:, 32:].view(2, 32, 2, 2)[..., 0, 0], top_left)


def test_pyramid_tells_apart_maps_that_differ_only_in_layout():
    left, right = torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)
    left[..., :, :2], right[..., :, 2:] = 1.0, 1.0
    average, pyramid = GlobalAveragePool(), SpatialPyramidPool([1, 2])
    torch.testing.assert_close(average(left), average(right))
    pooled = pyramid(torch.cat([left, right]))
    assert pooled.shape == (2, 2 * 5) and pyramid.output_dim(2) == 10
    torch.testing.assert_close(pooled[:, :2], average(torch.cat([left, right])))
    # cells in row-major order per channel: left has ink in cells 0 and 2, right in 1 and 3
    torch.testing.assert_close(pooled[0, 2:6], torch.tensor([1.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(pooled[1, 2:6], torch.tensor([0.0, 1.0, 0.0, 1.0]))


def test_small_cnn_pools_several_stages(context):
    params = SmallCNNParams(width=8, stages=3, pool="pyramid", pyramid_levels=[1, 2], pooled_stages=2)
    encoder = SmallCNN(params, context)
    out = encoder(context.modality.example_batch(2))
    assert encoder.feature_dim == (16 + 32) * 5 and out.pooled.shape == (2, 240)
    assert out.spatial.shape == (2, 32, 8, 8)
    torch.testing.assert_close(out.pooled[:, 80:112], out.spatial.mean(dim=(2, 3)))


def test_pool_settings_that_do_not_fit_are_clear_errors(context):
    with pytest.raises(ValueError, match="pyramid level 3 does not divide the 8x8 feature map"):
        SmallCNN(SmallCNNParams(width=8, stages=3, pool="pyramid", pyramid_levels=[1, 3]), context)
    with pytest.raises(ValueError, match=r"pooled_stages \(3\) exceeds stages \(2\)"):
        SmallCNN(SmallCNNParams(width=8, stages=2, pooled_stages=3), context)


def test_timm_vit_pyramid_pools_the_patch_grid(context):
    kwargs = {"patch_size": 8, "depth": 1, "embed_dim": 48, "num_heads": 3}
    encoder = TimmEncoder(TimmParams(model="vit_tiny_patch16_224", model_kwargs=kwargs, pool="pyramid"), context)
    out = encoder(context.modality.example_batch(2))
    assert encoder.feature_dim == 48 * 5 and out.pooled.shape == (2, 240)
    patches = out.tokens[:, 1:]  # the class token is left out; 4x4 patches, row-major
    torch.testing.assert_close(out.pooled[:, :48], patches.mean(dim=1))
    top_left = patches.view(2, 4, 4, 48)[:, :2, :2].mean(dim=(1, 2))
    torch.testing.assert_close(out.pooled[:, 48:].view(2, 48, 4)[..., 0], top_left)


def test_normalisation_uses_modality_constants():
    modality = ImageModality(ImageParams(image_size=8, mean=(0.5,), std=(0.25,)))
    encoder = SmallCNN(SmallCNNParams(width=4, stages=1), BuildContext(modality=modality))
    x = torch.full((1, 3, 8, 8), 0.75)
    torch.testing.assert_close(encoder.normalize(x), torch.ones_like(x))
    with pytest.raises(ValueError, match="std values must be > 0"):
        Normalize([0.5], [0.0])


def test_timm_resnet_cifar_stem_keeps_resolution(context):
    encoder = TimmEncoder(TimmParams(model="resnet18", cifar_stem=True), context)
    out = encoder(context.modality.example_batch(2))
    assert encoder.provides == {"pooled", "spatial"}
    assert encoder.feature_dim == 512
    assert out.pooled.shape == (2, 512)
    # stride-1 stem without max-pool: 32 / 8 = 4 instead of 32 / 32 = 1
    assert out.spatial.shape == (2, 512, 4, 4)
    plain = TimmEncoder(TimmParams(model="resnet18"), context)
    assert plain(context.modality.example_batch(2)).spatial.shape == (2, 512, 1, 1)


def test_timm_vit_gives_tokens(context):
    encoder = TimmEncoder(TimmParams(model="vit_tiny_patch16_224", model_kwargs={"patch_size": 8, "depth": 2}), context)
    out = encoder(context.modality.example_batch(2))
    assert encoder.provides == {"pooled", "tokens", "patch_masking"}  # a fixed patch grid: mae can use it
    assert out.tokens.shape == (2, 1 + 16, 192)  # class token + (32 / 8)^2 patches
    assert out.pooled.shape == (2, 192) and out.spatial is None


def test_timm_unknown_model_lists_close_matches(context):
    with pytest.raises(ValueError, match=r"unknown timm model 'resnet19'; close matches: .*resnet18"):
        TimmEncoder(TimmParams(model="resnet19"), context)


def test_timm_cifar_stem_on_a_transformer_is_a_clear_error(context):
    with pytest.raises(ValueError, match="cifar_stem applies to ResNet-style models"):
        TimmEncoder(TimmParams(model="vit_tiny_patch16_224", cifar_stem=True, model_kwargs={"depth": 1}), context)


def test_timm_extra_kwargs_and_reserved_ones(context):
    encoder = TimmEncoder(TimmParams(model="resnet18", drop_path_rate=0.1, model_kwargs={"drop_rate": 0.2}), context)
    assert encoder.model.drop_rate == 0.2
    with pytest.raises(ValueError, match=r"model_kwargs may not set \['pretrained'\]"):
        TimmEncoder(TimmParams(model_kwargs={"pretrained": True}), context)


def test_timm_loads_local_weights(tmp_path, context):
    source = TimmEncoder(TimmParams(model="resnet18", cifar_stem=True), context)
    torch.save(source.state_dict(), tmp_path / "encoder.pt")  # this encoder's own keys ("model.", "normalize.")
    loaded = TimmEncoder(TimmParams(model="resnet18", cifar_stem=True, weights=tmp_path / "encoder.pt"), context)
    source.eval(), loaded.eval()
    x = context.modality.example_batch(2)
    torch.testing.assert_close(loaded(x).pooled, source(x).pooled)
    with pytest.raises(ValueError, match="lacks .* parameters of the model"):
        torch.save({"fc.weight": torch.zeros(1)}, tmp_path / "wrong.pt")
        TimmEncoder(TimmParams(model="resnet18", weights=tmp_path / "wrong.pt"), context)
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"does not hold a state dict \(got list\)"):
        TimmEncoder(TimmParams(model="resnet18", weights=tmp_path / "list.pt"), context)
    with pytest.raises(ValueError, match="weights file .*absent.pt does not exist"):
        TimmEncoder(TimmParams(model="resnet18", weights=tmp_path / "absent.pt"), context)


@pytest.mark.parametrize(
    "make",
    [
        lambda ctx: SmallCNN(SmallCNNParams(width=8, stages=2), ctx),
        lambda ctx: TimmEncoder(TimmParams(model="resnet18", cifar_stem=True), ctx),
        lambda ctx: SmallCNN(SmallCNNParams(width=8, pool="pyramid", pooled_stages=3), ctx),
        lambda ctx: TimmEncoder(
            TimmParams(
                model="vit_tiny_patch16_224",
                model_kwargs={"patch_size": 8, "depth": 1, "embed_dim": 48, "num_heads": 3, "global_pool": "avg"},
                pool="pyramid",
            ),
            ctx,
        ),
    ],
    ids=["small_cnn", "timm_resnet18", "small_cnn_pyramid", "timm_vit_pyramid"],
)
def test_onnx_export_with_dynamic_batch(make, context):
    import onnxruntime

    encoder = make(context).eval()
    module = encoder.export_module()
    example = context.modality.example_batch(2)["image"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (example,), dynamo=True, input_names=["image"], dynamic_axes={"image": {0: "batch"}}, verbose=False
        )
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString())
    fresh = torch.rand(5, 3, 32, 32)  # another batch size than the example
    (onnx_out,) = session.run(None, {"image": fresh.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(onnx_out), module(fresh), atol=1e-4, rtol=1e-4)
