"""``train.early_stopping`` and ``train.validate_every`` given wrongly: a recipe error at the line.

Each row adds lines to the toy recipe's ``train:`` section, runs it in process and checks the
exit code (2, a recipe error), that the message names the file and line of the field, and that
no training happened. The toy modality has no held-out data unless ``data.held_out`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from sslhub.cli import main

DATA = Path(__file__).resolve().parent.parent / "data"
RECIPE = DATA / "toy_recipe.yaml"
SMALL = ["--set", "export=null", "--set", "evaluate.enabled=false", "--progress", "off"]


@dataclass(frozen=True)
class Case:
    id: str
    bug: str
    train_lines: str
    field: str
    message: str


CASES = [
    Case(
        "early_stopping_without_held_out_data",
        "(new) a recipe asking for early stopping on data with no held-out part",
        "  early_stopping: {patience: 3}\n",
        "train.early_stopping",
        "needs held-out data to validate on, but modality 'toy_vectors' has none",
    ),
    Case(
        "validate_every_without_held_out_data",
        "(new) periodic validation on data with no held-out part",
        "  validate_every: 5\n",
        "train.validate_every",
        "needs held-out data to validate on",
    ),
    Case(
        "patience_zero",
        "(new) a patience that would stop at the first validation",
        "  early_stopping:\n    patience: 0\n",
        "train.early_stopping.patience",
        "greater than or equal to 1",
    ),
    Case(
        "misspelt_option",
        "(new) a misspelt option silently ignored",
        "  early_stopping:\n    patiance: 3\n",
        "train.early_stopping.patiance",
        "unknown field; did you mean 'patience'?",
    ),
    Case(
        "negative_min_delta",
        "(new) a negative min_delta would count a worse value as an improvement",
        "  early_stopping:\n    min_delta: -0.1\n",
        "train.early_stopping.min_delta",
        "greater than or equal to 0",
    ),
    Case(
        "unknown_mode",
        "(new) a mode that is neither min nor max",
        "  early_stopping:\n    mode: up\n",
        "train.early_stopping.mode",
        "'min' or 'max'",
    ),
    Case(
        "validate_every_zero",
        "(new) validating every 0 steps",
        "  validate_every: 0\n",
        "train.validate_every",
        "greater than 0",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_early_stopping_setting(case: Case, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(DATA))
    monkeypatch.setenv("SSLHUB_DISABLE_PLUGINS", "sslhub")
    text = RECIPE.read_text()
    anchor = "  log_every: 5\n"
    assert anchor in text
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text.replace(anchor, anchor + case.train_lines))
    last_key = case.field.rsplit(".", 1)[-1]
    line = next(i for i, row in enumerate(recipe.read_text().splitlines(), 1) if row.strip().startswith(last_key))
    out = tmp_path / "run"
    assert main(["run", str(recipe), "-p", "toy_plugin", "--out", str(out), *SMALL]) == 2
    err = capsys.readouterr().err
    assert f"{recipe}:{line}: {case.field}: " in err and case.message in err, err
    assert "Traceback" not in err
    assert not (out / "checkpoints").exists(), "nothing is trained"
