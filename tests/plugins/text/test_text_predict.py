"""`sslhub predict` on .txt and .jsonl files: a classifier on a text encoder gives PyTorch's probabilities."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sslhub import BuildContext
from sslhub.export import export_classifier
from sslhub_text.encoders.hf_encoder import HFEncoder, HFParams

CLASSES = ["howto", "reference"]
TEXTS = [
    "Import a module by name.",
    "The for statement iterates over the items of any sequence.",
    "Exceptions " * 40,  # longer than max_length: truncated as in training
    "Read a file line by line.",
]


@pytest.fixture(scope="module")
def classifier(text_modality, tmp_path_factory):
    torch.manual_seed(0)
    params = HFParams(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    encoder = HFEncoder(params, BuildContext(modality=text_modality, modality_name="text")).eval()
    torch.manual_seed(1)
    head = torch.nn.Linear(encoder.feature_dim, len(CLASSES))
    with torch.no_grad():  # spread the untrained encoder's logits so that both classes occur
        head.weight.mul_(20.0)
        head.bias.sub_(head(_pooled(text_modality, encoder, TEXTS)).mean(0))
    out = tmp_path_factory.mktemp("finetune")
    report = export_classifier(encoder, head, text_modality, CLASSES, out / "model")
    assert report["passed"] and (out / "model" / "tokenizer.json").is_file()
    return encoder, head, out


def _pooled(text_modality, encoder, texts: list[str]) -> torch.Tensor:
    """The PyTorch path: the modality's tokenizer, [CLS] ids [SEP] truncated to max_length, its collate."""
    width = text_modality._content_length()
    samples = []
    for text in texts:
        ids = text_modality._wrap(text_modality.tokenizer.encode(text, add_special_tokens=False).ids[:width])
        samples.append({"input_ids": torch.tensor(ids), "attention_mask": torch.ones(len(ids), dtype=torch.long)})
    with torch.no_grad():
        return encoder(text_modality.collate(samples)).pooled


def test_predicting_text_lines_and_records_gives_pytorchs_probabilities(text_modality, classifier, tmp_path):
    encoder, head, finetune_dir = classifier
    (tmp_path / "docs.txt").write_text(f"{TEXTS[0]}\n\n{TEXTS[1]}\n{TEXTS[2]}\n")
    (tmp_path / "more.jsonl").write_text(json.dumps({"body": TEXTS[3], "id": 7}) + "\n")
    out = tmp_path / "predictions.jsonl"

    result = subprocess.run(
        [sys.executable, "-m", "sslhub", "predict", str(finetune_dir), str(tmp_path / "more.jsonl"),
         str(tmp_path / "docs.txt"), "--text-field", "body", "--out", str(out), "--batch-size", "3", "--threads", "1"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "predicted 4 inputs (text)" in result.stdout
    records = [json.loads(line) for line in out.read_text().splitlines()]
    docs = tmp_path / "docs.txt"
    assert [r["input"] for r in records] == [f"{tmp_path / 'more.jsonl'}:1", f"{docs}:1", f"{docs}:3", f"{docs}:4"]
    texts = [TEXTS[3], *TEXTS[:3]]
    with torch.no_grad():
        expected = torch.softmax(head(_pooled(text_modality, encoder, texts)), dim=-1).numpy()
    got = np.array([[r["probabilities"][name] for name in CLASSES] for r in records])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [r["predicted_class"] for r in records] == [CLASSES[i] for i in expected.argmax(1)]
    assert len({r["predicted_class"] for r in records}) == 2


def test_a_jsonl_line_without_the_text_field_says_where(classifier, tmp_path):
    _, _, finetune_dir = classifier
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"title": "no text here"}\n')
    result = subprocess.run(
        [sys.executable, "-m", "sslhub", "predict", str(finetune_dir), str(tmp_path / "bad.jsonl"),
         "--out", str(tmp_path / "p.csv")],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "bad.jsonl:2: no string field 'text' (use --text-field)" in result.stderr
