"""JSONL documents grouped by a field: unseen test groups, validation errors at the recipe line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sslhub.cli import main
from sslhub_text.modality import TextModality, TextParams, grouped_document_split

TOKENIZER = {"type": "train", "vocab_size": 64}
WORDS = {"sport": "ball goal team match win score player", "food": "bread soup salt cook taste meal dish"}

RECIPE = """\
name: grouped-text
data:
  modality: text
  tokenizer: {{type: train, vocab_size: 64}}
  source: {{type: files, path: {path}, label_field: topic, group_field: {group}}}
encoder: {{name: hf}}
objectives: [{{name: mlm}}]
"""


def write_jsonl(path: Path) -> Path:
    """Two topics written by five authors each, four posts per author."""
    rng = np.random.default_rng(0)
    with path.open("w") as handle:
        for topic, words in WORDS.items():
            for author in range(5):
                for _ in range(4):
                    text = " ".join(rng.choice(words.split(), 8))
                    handle.write(json.dumps({"text": text, "topic": topic, "author": f"{topic}-{author}"}) + "\n")
    return path


def test_the_labeled_split_keeps_authors_apart(tmp_path):
    path = write_jsonl(tmp_path / "posts.jsonl")
    source = {"type": "files", "path": str(path), "label_field": "topic", "group_field": "author"}
    params = TextParams.model_validate({"source": source, "tokenizer": TOKENIZER, "held_out_fraction": 0.2})
    model = TextModality(params)
    split = model.eval_split()
    assert split.groups == {"train": 8, "test": 2}
    assert len(split.train) == 32 and len(split.test) == 8
    test_labels = sorted(int(split.test[i]["label"]) for i in range(len(split.test)))
    assert test_labels == [0] * 4 + [1] * 4  # one author of each topic
    documents = params.source.documents()
    train, test, class_names, _ = grouped_document_split(documents, 0.2, 0)
    assert class_names == ["food", "sport"]
    assert not {documents[i].group for i in train} & {documents[i].group for i in test}


def validate(tmp_path: Path, capsys, group: str) -> tuple[int, str]:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(path=write_jsonl(tmp_path / "posts.jsonl"), group=group))
    code = main(["validate", str(recipe), "-p", "no:vision", "-p", "no:audio"])
    return code, capsys.readouterr().err


def test_a_group_field_in_no_record_is_a_recipe_error_at_its_line(tmp_path, capsys):
    code, err = validate(tmp_path, capsys, "writer")
    assert code == 2
    assert (
        f"recipe.yaml:5: data.source.group_field: group_field 'writer' is in none of the 40 labeled records of "
        f"{tmp_path / 'posts.jsonl'}"
    ) in err


def test_a_split_leaving_a_topic_without_train_documents_is_a_recipe_error(tmp_path, capsys):
    code, err = validate(tmp_path, capsys, "topic")
    assert code == 2
    assert "recipe.yaml:5: data.source.group_field: the grouped split leaves class" in err


def test_a_group_field_without_a_label_field_is_a_recipe_error(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    text = RECIPE.format(path=write_jsonl(tmp_path / "posts.jsonl"), group="author")
    recipe.write_text(text.replace("label_field: topic, ", ""))
    assert main(["validate", str(recipe), "-p", "no:vision", "-p", "no:audio"]) == 2
    err = capsys.readouterr().err
    assert "recipe.yaml:5: data.source: group_field groups the labeled split, so it needs label_field too" in err
