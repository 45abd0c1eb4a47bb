"""Layer-wise lr decay (sslhub.finetune_model) on the hf encoder: embeddings, then encoder.layer.N."""

from __future__ import annotations

import pytest

from sslhub.finetune_model import Classifier, encoder_layer_ids, parameter_groups


def test_hf_layers_get_decayed_learning_rates(make_encoder):
    encoder = make_encoder(num_layers=2)
    ids, count = encoder_layer_ids(encoder)
    assert count == 2
    assert ids["model.embeddings.word_embeddings.weight"] == ids["model.embeddings.LayerNorm.weight"] == 0
    assert ids["model.encoder.layer.0.attention.self.query.weight"] == 1
    assert ids["model.encoder.layer.1.output.dense.weight"] == 2
    classifier = Classifier(encoder, num_classes=3)
    groups = parameter_groups(classifier, head_lr=1e-3, encoder_lr_scale=1.0, layer_decay=0.8, weight_decay=0.0)
    lr_by_layer = {group["layer"]: group["lr"] for group in groups}
    assert lr_by_layer == pytest.approx({0: 1e-3 * 0.8**3, 1: 1e-3 * 0.8**2, 2: 1e-3 * 0.8, -1: 1e-3})
    grouped = [param for group in groups for param in group["params"]]
    assert sorted(map(id, grouped)) == sorted(map(id, classifier.parameters()))


def test_frozen_hf_encoder_leaves_only_the_head_to_train(make_encoder):
    classifier = Classifier(make_encoder(), num_classes=3, frozen=True)
    groups = parameter_groups(classifier, head_lr=1e-3, encoder_lr_scale=0.1, layer_decay=0.8, weight_decay=0.0)
    assert [group["layer"] for group in groups] == [-1, -1]  # head weight (decayed group) and bias
    classifier.train()
    assert classifier.head.training and not classifier.encoder.training  # no dropout, no statistics updates
