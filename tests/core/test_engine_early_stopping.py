"""Validation and early stopping of pretraining (``train.validate_every``, ``train.early_stopping``),
driven through the real ``sslhub`` command with the toy plugin.

The toy modality holds out its last 128 samples (``data.held_out``). With a constant learning
rate the held-out loss falls by less than 0.2 between the validations at steps 10, 15 and 20,
so ``min_delta: 0.2, patience: 2`` stops the 60-step run at step 20 with the best at step 10.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from toy_runs import BLOCK_BUILTINS, RECIPE, final_weights, sslhub, sslhub_env, torchrun_command, toy_run_command

#: a 60-step toy run that validates every 5 steps on 128 held-out samples (no slow probes).
VALIDATED = {
    "data.held_out": "128",
    "train.schedule": "constant",
    "train.warmup": "0",
    "train.validate_every": "5",
    "train.checkpoint_every": "10",
    "train.keep_checkpoints": "10",
    "evaluate.few_shot": "null",
    "evaluate.linear_probe": "null",
}
STOPS_AT_20 = {"train.early_stopping.min_delta": "0.2", "train.early_stopping.patience": "2"}


def sets(*settings: dict[str, str]) -> list[str]:
    """``--set KEY=VALUE`` for every entry of ``settings`` (later ones win)."""
    merged = {key: value for setting in settings for key, value in setting.items()}
    return [arg for key, value in merged.items() for arg in ("--set", f"{key}={value}")]


EARLY = sets(VALIDATED, STOPS_AT_20)


def run_toy(out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = toy_run_command(out, "-p", "toy_stop_plugin", *extra)
    return subprocess.run(command, capture_output=True, text=True, env={**sslhub_env(), **(env or {})}, timeout=240)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def checkpoint_weights(run_dir: Path, name: str) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / name, map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("early") / "run"
    result = run_toy(out, *EARLY)
    assert result.returncode == 0, result.stderr
    (out / "stdout.txt").write_text(result.stdout)
    return out


def test_a_stalling_held_out_loss_stops_the_run_and_says_why(stopped_run: Path):
    validations = [row for row in rows(stopped_run) if "val_loss" in row]
    assert [row["step"] for row in validations] == [5, 10, 15, 20]
    assert all("val_toy_contrastive/accuracy" in row for row in validations)
    losses = {row["step"]: row["val_loss"] for row in validations}
    assert losses[5] - losses[10] > 0.2 and losses[10] - min(losses[15], losses[20]) < 0.2  # the plateau
    assert max(row["step"] for row in rows(stopped_run)) == 20, "nothing is trained after the stop"

    summary = json.loads((stopped_run / "summary.json").read_text())
    early = summary["early_stopping"]
    assert summary["steps"] == 20
    assert early["stopped_early"] and early["step"] == 20 and early["total_steps"] == 60
    assert early["best_step"] == 10 and early["best_value"] == losses[10] and early["restored_best"]
    assert "loss did not improve by more than 0.2 in 2 validation(s)" in early["reason"]
    events = [json.loads(line) for line in (stopped_run / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "stopped" and events[-1]["step"] == 20
    assert events[-1]["best_step"] == 10 and "did not improve" in events[-1]["reason"]
    stdout = (stopped_run / "stdout.txt").read_text()
    assert "early stopping: stopped at step 20 of 60" in stdout
    assert "evaluation and export use the best weights" in stdout


@pytest.mark.slow
def test_the_best_weights_are_those_of_the_best_step_and_the_evaluation_uses_them(stopped_run: Path):
    best = checkpoint_weights(stopped_run, "best.pt")
    assert_same_weights(best, checkpoint_weights(stopped_run, "step_00000010.pt"))
    last = final_weights(stopped_run)
    assert any(not torch.equal(best[key], last[key]) for key in best), "the stop step's weights differ"
    # The evaluation's held-out accuracy is the validation's at step 10, not at the stop (step 20).
    validations = {row["step"]: row for row in rows(stopped_run) if "val_loss" in row}
    trained = json.loads((stopped_run / "evaluation.json").read_text())["trained"]
    assert trained["toy_contrastive/accuracy"] == validations[10]["val_toy_contrastive/accuracy"]
    assert validations[20]["val_toy_contrastive/accuracy"] != validations[10]["val_toy_contrastive/accuracy"]
    # `sslhub evaluate RUN` loads the run's final weights the same way: the best ones.
    again = sslhub("evaluate", str(stopped_run), "-p", "toy_plugin", *BLOCK_BUILTINS)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["trained"] == trained


def test_validation_leaves_training_unchanged(stopped_run: Path, tmp_path: Path):
    """Validations draw from their own seeded RNG: the weights at step 10 equal a run without them."""
    plain = {key: value for key, value in VALIDATED.items() if key != "train.validate_every"}
    result = run_toy(tmp_path / "plain", *sets(plain, {"train.steps": "10", "evaluate.enabled": "false"}))
    assert result.returncode == 0, result.stderr
    assert_same_weights(final_weights(tmp_path / "plain"), checkpoint_weights(stopped_run, "best.pt"))


def test_sigkill_then_resume_stops_at_the_same_step_with_the_same_weights(stopped_run: Path, tmp_path: Path):
    out = tmp_path / "run"
    killed = run_toy(out, *EARLY, env={"SSLHUB_TEST_KILL_AT_STEP": "17"})
    assert killed.returncode == -9, killed.stderr
    assert (out / "checkpoints" / "best.pt").exists()
    assert not (out / "summary.json").exists()
    resumed = sslhub(
        "run", str(RECIPE), "-p", "toy_plugin", "-p", "toy_stop_plugin", *BLOCK_BUILTINS, "--resume", str(out)
    )
    assert resumed.returncode == 0, resumed.stderr
    assert (
        json.loads((out / "summary.json").read_text())["early_stopping"]
        == json.loads((stopped_run / "summary.json").read_text())["early_stopping"]
    )
    assert_same_weights(final_weights(out), final_weights(stopped_run))
    assert_same_weights(checkpoint_weights(out, "best.pt"), checkpoint_weights(stopped_run, "best.pt"))
    validations = [(row["step"], row["val_loss"]) for row in rows(out) if "val_loss" in row]
    assert validations == [(row["step"], row["val_loss"]) for row in rows(stopped_run) if "val_loss" in row]


def test_a_run_resumed_after_it_stopped_stays_stopped(stopped_run: Path, tmp_path: Path):
    out = tmp_path / "copy"
    shutil.copytree(stopped_run, out)
    resumed = sslhub("run", str(RECIPE), "-p", "toy_plugin", *BLOCK_BUILTINS, "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "summary.json").read_text())["steps"] == 20
    assert_same_weights(final_weights(out), final_weights(stopped_run))


def test_monitoring_a_held_out_accuracy_stops_when_it_drops(tmp_path: Path):
    """``mode`` follows the name: an accuracy must rise; patience 1 stops at its first drop."""
    out = tmp_path / "run"
    monitor = {"train.early_stopping.monitor": "toy_contrastive/accuracy", "train.early_stopping.patience": "1"}
    result = run_toy(out, *sets(VALIDATED, monitor))
    assert result.returncode == 0, result.stderr
    accuracy = [row["val_toy_contrastive/accuracy"] for row in rows(out) if "val_loss" in row]
    early = json.loads((out / "summary.json").read_text())["early_stopping"]
    assert early["mode"] == "max" and early["stopped_early"]
    assert accuracy[-1] <= accuracy[-2] and all(b > a for a, b in zip(accuracy[:-2], accuracy[1:-1], strict=True))
    assert early["best_value"] == accuracy[-2] and early["step"] == 5 * len(accuracy)


def test_an_unknown_monitor_names_the_figures_there_are(tmp_path: Path):
    result = run_toy(tmp_path / "run", *EARLY, "--set", "train.early_stopping.monitor=toy_contrastive/acc")
    assert result.returncode == 1
    assert "train.early_stopping.monitor: 'toy_contrastive/acc' is not a validation figure" in result.stderr
    assert "it has: toy_contrastive/accuracy, loss" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_plugin_callback_stops_the_run_through_the_public_request(tmp_path: Path):
    out = tmp_path / "run"
    settings = sets({"train.steps": "30", "evaluate.enabled": "false"})
    result = run_toy(out, *settings, env={"SSLHUB_TEST_STOP_AT_STEP": "7"})
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "summary.json").read_text())["steps"] == 7
    manifest = json.loads((out / "checkpoints" / "manifest.json").read_text())
    assert manifest["checkpoints"][-1]["step"] == 7, "the stop step is checkpointed"
    event = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()][-1]
    assert event == {**event, "event": "stopped", "step": 7, "reason": "the test plugin stops at step 7", "asked_at": 7}


def test_under_torchrun_a_stop_asked_on_rank_0_stops_every_rank(tmp_path: Path):
    """The plugin's callback runs on rank 0 only; rank 1 must leave its loop at the same step (no hang)."""
    env = {**sslhub_env(), "OMP_NUM_THREADS": "1", "SSLHUB_TEST_STOP_AT_STEP": "5"}
    command = torchrun_command()
    extra = sets(VALIDATED, STOPS_AT_20, {"train.batch_size": "32", "evaluate.enabled": "false"})
    command += toy_run_command(tmp_path / "run", "-p", "toy_stop_plugin", *extra)[1:]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 5
    validations = [row for row in rows(tmp_path / "run") if "val_loss" in row]
    assert [row["step"] for row in validations] == [5]
