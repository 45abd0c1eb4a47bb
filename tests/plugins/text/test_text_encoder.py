"""The hf encoder: architectures from config, pooling, local checkpoints, ONNX export."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from sslhub import BuildContext
from sslhub_text.encoders.hf_encoder import HFEncoder, HFParams


@pytest.mark.parametrize("architecture", ["bert", "roberta", "distilbert", "electra"])
def test_architectures_build_and_return_pooled_and_tokens(make_encoder, text_modality, architecture):
    encoder = make_encoder(architecture=architecture)
    batch = text_modality.collate([text_modality.eval_split().train[i] for i in range(3)])
    batch.pop("label")
    output = encoder(batch)
    length = batch["input_ids"].shape[1]
    assert output.pooled.shape == (3, 32) and output.tokens.shape == (3, length, 32)
    assert torch.equal(output.token_mask, batch["attention_mask"].bool())
    assert encoder.feature_dim == 32 and encoder.provides == {"pooled", "tokens", "token_embeddings"}
    embeddings = encoder.get_input_embeddings()
    assert embeddings.num_embeddings == text_modality.info().vocab_size
    assert encoder.model.config._attn_implementation == "sdpa"


def test_sizes_reach_the_config(make_encoder):
    encoder = make_encoder(num_layers=3, intermediate_size=48, dropout=0.0, config_overrides={"layer_norm_eps": 1e-6})
    config = encoder.model.config
    assert (config.num_hidden_layers, config.intermediate_size, config.hidden_dropout_prob) == (3, 48, 0.0)
    assert config.layer_norm_eps == 1e-6 and config.max_position_embeddings == 32
    distil = make_encoder(architecture="distilbert", intermediate_size=40).model.config
    assert (distil.dim, distil.hidden_dim, distil.n_layers) == (32, 40, 1)


def text_info_ids(encoder) -> set[int]:
    return {int(i) for i in encoder.pool_excluded_ids}


def test_mean_pooling_ignores_padding_and_cls_pooling_takes_the_first_token(make_encoder):
    encoder = make_encoder(dropout=0.0).eval()
    ids = torch.tensor([[2, 10, 11, 12, 3, 0, 0], [2, 10, 11, 12, 3, 0, 0]])
    mask = (ids != 0).long()
    changed = ids.clone()
    changed[1, 5:] = 7  # different tokens under padding
    with torch.no_grad():
        a = encoder({"input_ids": ids, "attention_mask": mask})
        b = encoder({"input_ids": changed, "attention_mask": mask})
    torch.testing.assert_close(a.pooled[0], b.pooled[1], atol=1e-5, rtol=0)
    # [CLS] (2) and [SEP] (3) are left out of the mean: content tokens 1..3 only
    assert text_info_ids(encoder) == {2, 3}
    expected = a.tokens[0, 1:4].mean(0)
    torch.testing.assert_close(a.pooled[0], expected, atol=1e-5, rtol=0)
    with_specials = make_encoder(dropout=0.0, pool_special_tokens=True).eval()
    with torch.no_grad():
        c = with_specials({"input_ids": ids, "attention_mask": mask})
    torch.testing.assert_close(c.pooled[0], c.tokens[0, :5].mean(0), atol=1e-5, rtol=0)
    # a text of special tokens only falls back to the mean of its real tokens
    only_special = torch.tensor([[2, 3, 0]])
    with torch.no_grad():
        d = encoder({"input_ids": only_special, "attention_mask": (only_special != 0).long()})
    torch.testing.assert_close(d.pooled[0], d.tokens[0, :2].mean(0), atol=1e-5, rtol=0)
    cls = make_encoder(dropout=0.0, pooling="cls").eval()
    with torch.no_grad():
        output = cls({"input_ids": ids, "attention_mask": mask})
    assert torch.equal(output.pooled, output.tokens[:, 0])


def test_bad_configurations_fail_with_clear_messages(make_encoder):
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        make_encoder(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="'layer_norm_epsilon' is not an attribute of BertConfig"):
        make_encoder(config_overrides={"layer_norm_epsilon": 1e-5})
    with pytest.raises(ValueError, match="unknown architecture 'bort'"):
        make_encoder(architecture="bort")
    with pytest.raises(ValidationError, match="pooling"):
        HFParams(pooling="max")


def test_local_checkpoint_loads_offline(make_encoder, text_modality, tmp_path):
    source = make_encoder()
    source.model.save_pretrained(tmp_path)
    loaded = HFEncoder(HFParams(local_path=str(tmp_path)), BuildContext(modality=text_modality, modality_name="text"))
    source.eval(), loaded.eval()
    batch = text_modality.example_batch(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).pooled, source(batch).pooled)


def test_onnx_export_with_dynamic_batch_and_sequence(make_encoder, text_modality, onnx_session):
    encoder = make_encoder().eval()
    session = onnx_session(encoder)
    # a different batch size and sequence length, with padding
    test = text_modality.eval_split().test
    short = [test[i] for i in range(len(test)) if len(test[i]["input_ids"]) < 20][:5]
    batch = text_modality.collate(short)
    batch.pop("label")
    assert batch["input_ids"].shape[0] == 5 and batch["input_ids"].shape[1] < 20
    assert (batch["attention_mask"] == 0).any()
    (pooled,) = session.run(None, {k: v.numpy() for k, v in batch.items()})
    with torch.no_grad():
        expected = encoder(batch).pooled.numpy()
    assert pooled.shape == expected.shape
    assert abs(pooled - expected).max() <= 1e-4
