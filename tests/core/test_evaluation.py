"""Evaluation orchestration: the verdict, few-shot notes, the raw-baseline contract, the summary table, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from toy_runs import sslhub_env, toy_run_command

from sslhub.cli import format_summary
from sslhub.errors import SSLHubError
from sslhub.evaluation import SplitFeatures, describe_score, raw_featurizer, usable_shots, verdict
from sslhub.recipe import EvaluateSpec


def test_verdict_says_what_training_beats_and_what_it_does_not():
    report = {
        "trained": {
            "knn_accuracy": 0.8,
            "few_shot_5_accuracy": 0.50,
            "few_shot_5_std": 0.05,
            "mlm/accuracy": 0.3,  # an objective metric, not a probe: no verdict
        },
        "random_init": {"knn_accuracy": 0.4, "few_shot_5_accuracy": 0.48, "mlm/accuracy": 0.1},
        "raw_input": {"knn_accuracy": 0.9, "few_shot_5_accuracy": 0.6},
    }
    assert verdict(report) == [
        "trained beats random init on kNN: 0.8000 vs 0.4000",
        "trained beats random init on 5-shot probe: 0.5000 vs 0.4800 (within the spread of the draws, std 0.0500)",
        "trained does NOT beat the raw-input baseline on kNN: 0.8000 vs 0.9000",
        "trained does NOT beat the raw-input baseline on 5-shot probe: 0.5000 vs 0.6000",
    ]
    assert verdict({"trained": {"knn_accuracy": 0.5}}) == []
    assert describe_score("image/linear_probe_accuracy") == "image full linear probe"


def test_few_shot_sizes_a_class_cannot_fill_are_skipped_with_a_note():
    labels = torch.tensor([0] * 30 + [1] * 4)
    features = SplitFeatures({"": torch.zeros(34, 2)}, {"": torch.zeros(2, 2)}, labels, torch.tensor([0, 1]))
    spec = EvaluateSpec(few_shot={"shots": [1, 5, 20], "draws": 2})
    notes: list[str] = []
    assert usable_shots(spec, features, ("cat", "dog"), notes) == [1]
    assert notes == [
        "few-shot probe with 5 shots skipped: class 'dog' has only 4 probe-train samples",
        "few-shot probe with 20 shots skipped: class 'dog' has only 4 probe-train samples",
    ]
    assert usable_shots(EvaluateSpec(few_shot=None), features, (), notes) == []


def test_raw_features_that_break_the_contract_get_a_clear_error():
    class Flat:
        def raw_features(self, batch):
            return batch["x"].flatten()

    with pytest.raises(SSLHubError, match=r"Flat.raw_features returned \(6,\) .*float \[batch, features\]"):
        raw_featurizer(Flat())({"x": torch.zeros(2, 3)})
    assert raw_featurizer(type("NoBaseline", (), {"raw_features": lambda self, batch: None})())({}) is None


def summary_with(evaluation: dict) -> str:
    return format_summary("toy", Path("runs/toy"), {"steps": 3, "train_seconds": 1.0, "evaluation": evaluation})


def test_summary_without_a_random_init_baseline_shows_the_other_columns():
    # evaluate.random_init_baseline: false used to crash the summary with a TypeError (issue 24)
    text = summary_with(
        {"trained": {"knn_accuracy": 0.7, "mlm/loss": 2.5}, "raw_input": {"knn_accuracy": 0.5}, "verdict": []}
    )
    assert "random init" not in text
    header, knn, loss = text.splitlines()[2:5]
    assert header.split() == ["metric", "trained", "raw", "input"]
    assert knn.split() == ["knn_accuracy", "0.7000", "0.5000"]
    assert loss.split() == ["mlm/loss", "2.5000", "-"]


def test_summary_shows_few_shot_spread_and_says_plainly_what_training_did_not_beat():
    trained = {"few_shot_5_accuracy": 0.6, "few_shot_5_std": 0.02}
    evaluation = {
        "trained": trained,
        "random_init": {"few_shot_5_accuracy": 0.7, "few_shot_5_std": 0.01},
        "raw_input": {"few_shot_5_accuracy": 0.4, "few_shot_5_std": 0.03},
        "notes": ["few-shot probe with 20 shots skipped: class 'dog' has only 4 probe-train samples"],
    }
    evaluation["verdict"] = verdict(evaluation)
    lines = summary_with(evaluation).splitlines()
    assert lines[3].split() == ["few_shot_5_accuracy", "0.6000±0.0200", "0.7000±0.0100", "0.4000±0.0300"]
    assert not any(line.startswith("few_shot_5_std") for line in lines)
    assert "WARNING: trained does NOT beat random init on 5-shot probe: 0.6000 vs 0.7000" in lines
    assert lines[-1] == "note: few-shot probe with 20 shots skipped: class 'dog' has only 4 probe-train samples"
    evaluation["random_init"]["few_shot_5_accuracy"] = 0.5
    evaluation["verdict"] = verdict(evaluation)
    assert "trained beats every baseline on all 2 probe comparisons" in summary_with(evaluation)


def test_the_run_summary_names_wins_smaller_than_the_spread_of_the_draws():
    from sslhub.evaluation import verdict

    evaluation = {
        "trained": {"few_shot_5_accuracy": 0.6, "few_shot_5_std": 0.2},
        "random_init": {"few_shot_5_accuracy": 0.5},
        "raw_input": {"few_shot_5_accuracy": 0.3},
    }
    evaluation["verdict"] = verdict(evaluation)
    lines = summary_with(evaluation).splitlines()
    assert (
        "trained beats every baseline on all 2 probe comparisons, 1 of them by less than the spread of the few-shot draws"
        in lines
    )
    narrow = (
        "  trained beats random init on 5-shot probe: 0.6000 vs 0.5000 (within the spread of the draws, std 0.2000)"
    )
    assert narrow in lines and not any("raw input" in line for line in lines if line.startswith("  "))


@pytest.mark.slow
def test_run_without_random_init_baseline_finishes_and_reports_the_raw_input(tmp_path: Path):
    import subprocess

    out = tmp_path / "run"
    command = toy_run_command(
        out,
        "--set",
        "train.steps=4",
        "--set",
        "evaluate.random_init_baseline=false",
        "--set",
        "evaluate.few_shot={shots: [2, 500], draws: 2}",
    )
    result = subprocess.run(command, capture_output=True, text=True, env=sslhub_env(), timeout=240)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "evaluation.json").read_text())
    assert "random_init" not in report
    probe_keys = {"knn_accuracy", "linear_probe_accuracy", "few_shot_2_accuracy", "few_shot_2_std"}
    assert set(report["trained"]) == set(report["raw_input"]) == probe_keys
    assert all("raw-input baseline" in line for line in report["verdict"])
    assert report["notes"][0].startswith("few-shot probe with 500 shots skipped: class '")
    assert "raw input" in result.stdout and "note: few-shot probe with 500 shots skipped" in result.stdout
