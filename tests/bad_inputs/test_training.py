"""Training settings that used to go silently wrong: a non-finite run never ends as a success.

Each row trains the toy recipe in process with the row's ``--set`` overrides and checks the exit
code, the message, and that every checkpoint left behind holds finite weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from sslhub.cli import main
from sslhub.resume import nonfinite_parameters

DATA = Path(__file__).resolve().parent.parent / "data"
RECIPE = DATA / "toy_recipe.yaml"
SMALL = ["--set", "export=null", "--set", "evaluate.enabled=false", "--progress", "off"]


@dataclass(frozen=True)
class Case:
    id: str
    bug: str
    overrides: tuple[str, ...]
    exit_code: int
    message: str


CASES = [
    Case(
        "huge_lr_with_skip_step",
        "skip_step with max_skipped_steps: 100 exited 0 with a NaN loss",
        (
            "train.optimizer.lr=1e30",
            "train.warmup=0",
            "train.nonfinite=skip_step",
            "train.max_skipped_steps=100",
            "train.steps=8",
            "train.checkpoint_every=2",
        ),
        3,
        "the final loss (step 8) is not finite: the run did not end with a usable model",
    ),
    Case(
        "nan_on_the_last_step_with_skip_step",
        "exited 0 although the last step was not finite",
        ("objectives.0.nan_at_step=6", "train.nonfinite=skip_step", "train.steps=6"),
        3,
        "the final loss (step 6) is not finite",
    ),
    Case(
        "nan_midway_with_skip_step_still_succeeds",
        "(the policy must keep working for a transient NaN)",
        ("objectives.0.nan_at_step=3", "train.nonfinite=skip_step", "train.steps=6"),
        0,
        "skipping step 3",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_training_setting(case: Case, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.syspath_prepend(str(DATA))
    monkeypatch.setenv("SSLHUB_DISABLE_PLUGINS", "sslhub")
    out = tmp_path / "run"
    overrides = [part for item in case.overrides for part in ("--set", item)]
    assert main(["run", str(RECIPE), "-p", "toy_plugin", "--out", str(out), *SMALL, *overrides]) == case.exit_code
    text = capsys.readouterr().err + caplog.text
    assert case.message in text and "Traceback" not in text
    for entry in json.loads((out / "checkpoints" / "manifest.json").read_text())["checkpoints"]:
        weights = torch.load(out / "checkpoints" / entry["file"], weights_only=True)["model"]
        assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point()), entry["file"]


def test_nonfinite_parameters_are_named():
    module = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    assert nonfinite_parameters(module) == []
    with torch.no_grad():
        module[1].bias.fill_(float("inf"))
        module[0].weight[0, 0] = float("nan")
    assert nonfinite_parameters(module) == ["0.weight", "1.bias"]
