"""Data paths that are missing, empty or of the wrong kind: ``sslhub validate`` names the recipe line.

Each row swaps one line of a shipped recipe (its ``source:``, or the text ``tokenizer:``) for a
path in a prepared folder and expects ``validate`` to exit 2 with the line, the field and the
problem (before the fix, every one was a "valid recipe" and ``run`` failed with a ValueError).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from sslhub.cli import main

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@dataclass(frozen=True)
class Case:
    id: str
    recipe: str
    line: str
    replacement: str
    expected: str


CASES = [
    Case("image_folder_missing", "image_simclr", "  source: {type: default}", "  source: {type: folder, path: nowhere}",
         "data.source.path: nowhere does not exist"),
    Case("image_folder_without_images", "image_simclr", "  source: {type: default}",
         "  source: {type: folder, path: notes}", "data.source.path: folder notes holds no .bmp / .gif / .jpeg"),
    Case("image_folder_is_a_file", "image_simclr", "  source: {type: default}",
         "  source: {type: folder, path: empty.npz}", "data.source.path: empty.npz is a file; expected a folder"),
    Case("image_npz_missing", "image_simclr", "  source: {type: default}", "  source: {type: numpy, path: no.npz}",
         "data.source.path: no.npz does not exist"),
    Case("image_npz_empty", "image_simclr", "  source: {type: default}", "  source: {type: numpy, path: empty.npz}",
         "data.source.path: empty.npz is empty (0 bytes)"),
    Case("audio_folder_without_audio", "audio_masked", "  source: {type: default, num_clips: 2000, num_classes: 10, cache: true}",
         "  source: {type: folder, path: notes}", "data.source.path: folder notes holds no .flac / .ogg / .wav file"),
    Case("text_files_missing", "text_mlm", "  source: {type: default}", "  source: {type: files, path: corpus.txt}",
         "data.source.path: corpus.txt does not exist"),
    Case("text_folder_without_text", "text_mlm", "  source: {type: default}", "  source: {type: files, path: empty}",
         "data.source.path: folder empty holds no .jsonl / .txt file"),
    Case("tokenizer_missing", "text_mlm",
         "  tokenizer: {type: train, vocab_size: 4000, lowercase: true, algorithm: wordpiece, min_frequency: 2}",
         "  tokenizer: {type: local, path: tok/tokenizer.json}", "data.tokenizer.path: tok/tokenizer.json does not exist"),
    Case("tokenizer_folder_without_tokenizer_json", "text_mlm",
         "  tokenizer: {type: train, vocab_size: 4000, lowercase: true, algorithm: wordpiece, min_frequency: 2}",
         "  tokenizer: {type: local, path: notes}", "data.tokenizer.path: folder notes has no tokenizer.json"),
    Case("csv_empty", "autoencoder_tabular", "  source: {type: default, name: digits}",
         "  source: {type: csv, path: empty.csv}", "data.source.path: empty.csv is empty (0 bytes)"),
    Case("table_npz_missing", "autoencoder_tabular", "  source: {type: default, name: digits}",
         "  source: {type: numpy, path: rows.npz}", "data.source.path: rows.npz does not exist"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_data_path(case: Case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.md").write_text("no data here\n")
    (tmp_path / "empty.npz").touch()
    (tmp_path / "empty.csv").touch()
    text = (RECIPES / f"{case.recipe}.yaml").read_text()
    lines = text.splitlines()
    number = lines.index(case.line) + 1
    lines[number - 1] = case.replacement
    Path("recipe.yaml").write_text("\n".join(lines) + "\n")
    assert main(["validate", "recipe.yaml"]) == 2
    err = capsys.readouterr().err
    assert f"recipe.yaml:{number}: {case.expected}" in err, err
    assert "Traceback" not in err


def test_evaluate_data_path_is_checked_at_its_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = (RECIPES / "image_simclr.yaml").read_text()
    assert "\nevaluate:\n" in text
    text = text.replace("\nevaluate:\n", "\nevaluate:\n  data:\n    source: {type: folder, path: gone}\n")
    Path("recipe.yaml").write_text(text)
    number = text.splitlines().index("    source: {type: folder, path: gone}") + 1
    assert main(["validate", "recipe.yaml"]) == 2
    err = capsys.readouterr().err
    assert f"recipe.yaml:{number}: evaluate.data.source.path: gone does not exist" in err, err
