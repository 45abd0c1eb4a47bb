"""`sslhub embed` on text files: the tokenizer travels with the export and ids match the modality's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sslhub.embed_files import EmbedError, FileEmbedder
from sslhub.export import export_encoder


@pytest.fixture(scope="module")
def exported(text_modality, tmp_path_factory):
    from sslhub import BuildContext
    from sslhub_text.encoders.hf_encoder import HFEncoder, HFParams

    torch.manual_seed(0)
    encoder = HFEncoder(
        HFParams(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
        BuildContext(modality=text_modality, modality_name="text"),
    ).eval()
    out = tmp_path_factory.mktemp("text_export")
    report = export_encoder(encoder, text_modality, out, modality_name="text")
    return encoder, out, report


def _reference(text_modality, encoder, texts: list[str]) -> np.ndarray:
    """The PyTorch path: the modality's tokenizer, [CLS] ids [SEP] truncated to max_length, padded."""
    info = text_modality.info()
    width = info.max_length - 2
    rows = [
        [
            info.cls_token_id,
            *text_modality.tokenizer.encode(t, add_special_tokens=False).ids[:width],
            info.sep_token_id,
        ]
        for t in texts
    ]
    length = max(map(len, rows))
    ids = torch.full((len(rows), length), info.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    with torch.no_grad():
        return encoder({"input_ids": ids, "attention_mask": mask}).pooled.numpy()


def test_tokenizer_is_copied_beside_the_model(exported):
    _, out, report = exported
    assert report.metadata["files"] == ["tokenizer.json"]
    assert (out / "tokenizer.json").is_file()


def test_txt_lines_and_jsonl_records_embed_like_the_pytorch_path(text_modality, exported, tmp_path):
    encoder, out, _ = exported
    texts = ["The for statement iterates over a sequence.", "Exceptions " * 40, "Import a module by name."]
    (tmp_path / "docs.txt").write_text(f"{texts[0]}\n\n{texts[1]}\n")
    (tmp_path / "more.jsonl").write_text(json.dumps({"body": texts[2], "id": 7}) + "\n")

    embeddings = FileEmbedder(out, text_field="body", threads=1).embed(
        [tmp_path / "docs.txt", tmp_path / "more.jsonl"], batch_size=2
    )

    assert embeddings.sources == [
        f"{tmp_path / 'docs.txt'}:1",
        f"{tmp_path / 'docs.txt'}:3",
        f"{tmp_path / 'more.jsonl'}:1",
    ]
    # the long line is truncated to max_length, as in training
    np.testing.assert_allclose(embeddings.vectors, _reference(text_modality, encoder, texts), atol=1e-4)


def test_a_jsonl_line_without_the_text_field_says_where(exported, tmp_path):
    _, out, _ = exported
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"title": "no text here"}\n')
    with pytest.raises(EmbedError, match=r"bad.jsonl:2: no string field 'text'"):
        FileEmbedder(out, threads=1).embed([tmp_path / "bad.jsonl"])


def test_a_missing_tokenizer_says_how_to_get_it(exported, tmp_path):
    import shutil

    _, out, _ = exported
    copy = tmp_path / "model"
    shutil.copytree(out, copy)
    (copy / "tokenizer.json").unlink()
    (tmp_path / "one.txt").write_text("hello\n")
    with pytest.raises(EmbedError, match="tokenizer.json is missing"):
        FileEmbedder(copy, threads=1).embed([tmp_path / "one.txt"])
