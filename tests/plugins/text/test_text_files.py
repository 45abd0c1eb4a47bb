"""The text plugin's file decoder (sslhub_text.files): texts to token ids through the tokenizer stored in
the model folder, never a tokenizer file the metadata points at outside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx_models import mean_model
from toy_runs import sslhub

from sslhub.files import DecodeError, ModelInputs
from sslhub_text.files import TextDecoder


def _tokenizer(path: Path) -> Path:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tokenizer = Tokenizer(WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


def _preprocessing(tokenizer_file: str) -> dict:
    return {"max_length": 8, "pad_token_id": 0, "cls_token_id": 3, "sep_token_id": 4, "tokenizer_file": tokenizer_file}


def _text_model(folder: Path, tokenizer_file: str) -> Path:
    """A model averaging input_ids + attention_mask over the sequence: ``[B, L] -> [B, 1]``."""
    spec = {"input_spec": {"preprocessing": _preprocessing(tokenizer_file)}}
    mean_model(folder / "model.onnx", {"input_ids": 2, "attention_mask": 2}, spec)
    return folder


def test_texts_are_wrapped_truncated_and_padded(tmp_path):
    _tokenizer(tmp_path / "tokenizer.json")
    model = ModelInputs(
        ("input_ids", "attention_mask"), {"input_spec": {"preprocessing": _preprocessing("tokenizer.json")}}, tmp_path
    )
    assert TextDecoder.accepts(model)
    decoder = TextDecoder(model)
    batch = decoder.collate(decoder.read_records(["hello world", "world " * 20]))
    assert batch["input_ids"].tolist() == [[3, 1, 2, 4, 0, 0, 0, 0], [3, 2, 2, 2, 2, 2, 2, 4]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0, 0], [1] * 8]
    with pytest.raises(DecodeError, match=r"texts\[1\] is int"):
        decoder.read_records(["hello", 3])


def test_a_composite_modality_nests_the_text_constants_under_text(tmp_path):
    nested = {"input_spec": {"preprocessing": {"image": {"image_size": 8}, "text": _preprocessing("t.json")}}}
    assert TextDecoder.accepts(ModelInputs(("input_ids", "attention_mask"), nested, tmp_path))
    assert not TextDecoder.accepts(ModelInputs(("input_ids",), nested, tmp_path))


def test_sslhub_embed_tokenizes_text_files_with_the_stored_tokenizer(tmp_path):
    folder = _text_model(tmp_path / "model", "tokenizer.json")
    _tokenizer(folder / "tokenizer.json")
    (tmp_path / "docs.jsonl").write_text('{"body": "hello world"}\n\n{"body": "world"}\n')
    result = sslhub(
        "embed", str(folder), str(tmp_path / "docs.jsonl"), "--text-field", "body", "--out", str(tmp_path / "e")
    )
    assert result.returncode == 0, result.stderr
    assert "embedded 2 inputs (text)" in result.stdout
    # one batch, padded to 4: mean over [CLS] ids [SEP] (pad) of ids + mask, (4 + 2 + 3 + 5) / 4 and (4 + 3 + 5 + 0) / 4
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), [[3.5], [3.0]])
    assert (tmp_path / "e.sources.txt").read_text().split() == [
        f"{tmp_path / 'docs.jsonl'}:1",
        f"{tmp_path / 'docs.jsonl'}:3",
    ]


@pytest.mark.parametrize("way_out", ["parent", "absolute", "link"])
def test_sslhub_embed_refuses_a_tokenizer_file_outside_the_model_folder(tmp_path, way_out):
    outside = _tokenizer(tmp_path / "elsewhere" / "tokenizer.json")
    name = {"parent": "../elsewhere/tokenizer.json", "absolute": str(outside), "link": "tokenizer.json"}[way_out]
    folder = _text_model(tmp_path / "model", name)
    if way_out == "link":
        (folder / "tokenizer.json").symlink_to(outside)
    (tmp_path / "docs.txt").write_text("hello world\n")
    result = sslhub("embed", str(folder), str(tmp_path / "docs.txt"), "--out", str(tmp_path / "e"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"tokenizer_file {name!r} leads outside {folder}" in result.stderr
    assert not (tmp_path / "e.npy").exists()
