"""The hf and hf_causal encoders' native export: a save_pretrained folder transformers loads offline."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

import sslhub
from sslhub import BuildContext, EncoderSet
from sslhub.export_formats import EncoderDescription, write_weight_formats
from sslhub_text.encoders.causal_hf import CausalHFEncoder, CausalHFParams

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Return a new list.", "x"]


def _sslhub_inputs(text_modality, texts):
    """Token ids as the modality makes them: [CLS] ids [SEP], truncated, right-padded."""
    info = text_modality.info()
    rows = []
    for text in texts:
        ids = text_modality.tokenizer.encode(text, add_special_tokens=False).ids[: info.max_length - 2]
        rows.append([info.cls_token_id, *ids, info.sep_token_id])
    width = max(map(len, rows))
    input_ids = torch.tensor([row + [info.pad_token_id] * (width - len(row)) for row in rows])
    return {
        "input_ids": input_ids,
        "attention_mask": (torch.arange(width) < torch.tensor([len(r) for r in rows])[:, None]).long(),
    }


def test_bert_folder_loads_in_transformers_with_the_same_states_and_tokens(make_encoder, text_modality, tmp_path):
    encoder = make_encoder(dropout=0.0).eval()
    written = encoder.export_native(tmp_path, text_modality)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(written)
    torch.manual_seed(99)
    model = AutoModel.from_pretrained(tmp_path, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    long_text = " ".join(["function"] * 100)
    expected = _sslhub_inputs(text_modality, [*TEXTS, long_text])
    tokens = tokenizer([*TEXTS, long_text], padding=True, truncation=True, return_tensors="pt")
    assert torch.equal(tokens["input_ids"], expected["input_ids"])
    assert torch.equal(tokens["attention_mask"], expected["attention_mask"])
    with torch.no_grad():
        hidden = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
        torch.testing.assert_close(hidden, encoder(expected).tokens)


def test_gpt2_folder_loads_in_transformers_with_the_same_states(text_modality, tmp_path):
    torch.manual_seed(0)
    params = CausalHFParams(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, dropout=0.0)
    encoder = CausalHFEncoder(params, BuildContext(modality=text_modality, modality_name="text")).eval()
    encoder.export_native(tmp_path, text_modality)
    model = AutoModel.from_pretrained(tmp_path, local_files_only=True).eval()
    assert model.config.model_type == "gpt2"
    tokens = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=tokens["input_ids"]).last_hidden_state
        torch.testing.assert_close(hidden, encoder(dict(tokens)).tokens)


def test_export_folder_loads_with_load_encoder_and_tokenizes_texts(make_encoder, text_modality, tmp_path):
    encoder = make_encoder(dropout=0.0).eval()
    params = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "dropout": 0.0}
    description = EncoderDescription("hf", params, "text", seed=0)
    write_weight_formats(
        EncoderSet({"default": encoder}), text_modality, {"default": description}, tmp_path, ("safetensors",)
    )
    assert json.loads((tmp_path / "encoder.json").read_text())["files"] == ["encoder.safetensors", "tokenizer.json"]
    loaded = sslhub.load_encoder(tmp_path)
    inputs = loaded.preprocess(texts=TEXTS)
    expected = _sslhub_inputs(text_modality, TEXTS)
    assert torch.equal(inputs["input_ids"], expected["input_ids"])
    lines = tmp_path / "texts.txt"
    lines.write_text("\n".join(TEXTS) + "\n\n")
    assert torch.equal(loaded.preprocess([lines])["input_ids"], expected["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), encoder(expected).pooled)
        torch.testing.assert_close(loaded(inputs["input_ids"], inputs["attention_mask"]), encoder(expected).pooled)
    with pytest.raises(ValueError, match="missing inputs"):
        loaded({"input_ids": inputs["input_ids"]})


def test_a_tokenizer_file_outside_the_export_folder_is_not_read(make_encoder, text_modality, tmp_path):
    encoder = make_encoder(dropout=0.0).eval()
    params = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "dropout": 0.0}
    folder = tmp_path / "export"
    description = EncoderDescription("hf", params, "text", seed=0)
    write_weight_formats(
        EncoderSet({"default": encoder}), text_modality, {"default": description}, folder, ("safetensors",)
    )
    record = json.loads((folder / "encoder.json").read_text())
    (folder / "tokenizer.json").rename(tmp_path / "tokenizer.json")
    record["modality"]["input_spec"]["preprocessing"]["tokenizer_file"] = "../tokenizer.json"
    (folder / "encoder.json").write_text(json.dumps(record))
    loaded = sslhub.load_encoder(folder)
    with pytest.raises(sslhub.SSLHubError, match=r"tokenizer_file '../tokenizer.json' leads outside"):
        loaded.preprocess(texts=TEXTS)
