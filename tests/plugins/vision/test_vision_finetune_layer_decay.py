"""Layer-wise lr decay (sslhub.finetune_model) on the timm encoder's ViT: one lr per block, by depth."""

from __future__ import annotations

import pytest

from sslhub import BuildContext
from sslhub.finetune_model import Classifier, encoder_layer_ids, parameter_groups
from sslhub_vision.encoders.timm_encoder import TimmEncoder, TimmParams
from sslhub_vision.modality import ImageModality, ImageParams


@pytest.fixture(scope="module")
def vit() -> TimmEncoder:
    context = BuildContext(modality=ImageModality(ImageParams(image_size=32)), modality_name="image")
    kwargs = {"patch_size": 8, "depth": 3, "embed_dim": 32, "num_heads": 2}
    return TimmEncoder(TimmParams(model="vit_tiny_patch16_224", model_kwargs=kwargs), context)


def test_vit_parameters_get_the_layer_of_their_block(vit: TimmEncoder):
    ids, count = encoder_layer_ids(vit)
    assert count == 3
    assert ids["model.cls_token"] == ids["model.pos_embed"] == ids["model.patch_embed.proj.weight"] == 0
    assert ids["model.blocks.0.attn.qkv.weight"] == 1 and ids["model.blocks.2.mlp.fc2.bias"] == 3
    assert ids["model.norm.weight"] == 4  # after the last block


def test_vit_groups_decay_the_encoder_lr_by_depth(vit: TimmEncoder):
    classifier = Classifier(vit, num_classes=5)
    groups = parameter_groups(classifier, head_lr=1e-2, encoder_lr_scale=0.5, layer_decay=0.5, weight_decay=0.05)
    lr_of = {id(param): group["lr"] for group in groups for param in group["params"]}
    decay_of = {id(param): group["weight_decay"] for group in groups for param in group["params"]}
    named = dict(classifier.named_parameters())
    encoder_lr = 1e-2 * 0.5
    assert lr_of[id(named["encoder.model.patch_embed.proj.weight"])] == pytest.approx(encoder_lr * 0.5**4)
    assert lr_of[id(named["encoder.model.blocks.0.attn.qkv.weight"])] == pytest.approx(encoder_lr * 0.5**3)
    assert lr_of[id(named["encoder.model.blocks.2.attn.qkv.weight"])] == pytest.approx(encoder_lr * 0.5)
    assert lr_of[id(named["encoder.model.norm.weight"])] == pytest.approx(encoder_lr)
    assert lr_of[id(named["head.weight"])] == lr_of[id(named["head.bias"])] == 1e-2
    assert decay_of[id(named["encoder.model.blocks.1.mlp.fc1.weight"])] == 0.05
    assert decay_of[id(named["encoder.model.blocks.1.mlp.fc1.bias"])] == 0.0  # biases and norms: none
    grouped = [param for group in groups for param in group["params"]]
    assert sorted(map(id, grouped)) == sorted(map(id, classifier.parameters()))  # every parameter, once
