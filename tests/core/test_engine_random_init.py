"""``train.steps: 0``: a random-init baseline run that checkpoints, evaluates, exports and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from toy_runs import BLOCK_BUILTINS, RECIPE, sslhub

TOY = ["-p", "toy_plugin", *BLOCK_BUILTINS]


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp("random_init") / "run"
    result = sslhub("run", str(RECIPE), *TOY, "--out", str(run_dir), "--set", "train.steps=0")
    assert result.returncode == 0, result.stderr
    return run_dir, result.stdout


@pytest.mark.slow
def test_zero_steps_checkpoints_evaluates_and_exports_the_initial_encoder(baseline_run):
    run_dir, stdout = baseline_run
    assert "random-init baseline run: train.steps is 0: nothing was trained" in stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 0 and summary["random_init"] is True and summary["final_loss"] is None
    manifest = json.loads((run_dir / "checkpoints" / "manifest.json").read_text())
    assert [entry["step"] for entry in manifest["checkpoints"]] == [0]
    # the checkpoint holds the seeded initialisation, so it scores exactly as the random-init baseline
    evaluation = summary["evaluation"]
    assert evaluation["trained"] == evaluation["random_init"]
    metadata = json.loads((run_dir / "onnx" / "metadata.json").read_text())
    assert metadata["verification"]["passed"] and metadata["opset"] == 18


def test_export_of_a_random_init_run_and_an_opset_it_cannot_write(baseline_run, tmp_path):
    run_dir, _ = baseline_run
    exported = sslhub("export", str(run_dir), *TOY, "--out", str(tmp_path / "onnx"))
    assert exported.returncode == 0, exported.stderr
    assert "loaded" in exported.stderr and "step_00000000.pt" in exported.stderr
    assert "max rel diff" in exported.stdout and "rtol 1e-04" in exported.stdout
    assert json.loads((tmp_path / "onnx" / "metadata.json").read_text())["verification"]["rtol"] == 1e-4

    refused = sslhub("export", str(run_dir), *TOY, "--out", str(tmp_path / "bad"), "--opset", "99")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr + refused.stdout
    assert "opset 99 is outside what torch.onnx's exporter writes here (18 to 25)" in refused.stderr
    assert not (tmp_path / "bad" / "metadata.json").exists()


def test_validate_refuses_an_opset_the_exporter_cannot_write():
    result = sslhub("validate", str(RECIPE), *TOY, "--set", "export.onnx.opset=99")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "export.onnx.opset: Input should be less than or equal to 25" in result.stderr


@pytest.mark.slow
def test_a_random_init_run_resumes_into_training(baseline_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(baseline_run[0], run_dir)
    off = ["--set", "evaluate.enabled=false", "--set", "export=null"]
    result = sslhub("run", str(RECIPE), *TOY, "--resume", str(run_dir), "--set", "train.steps=3", *off)
    assert result.returncode == 0, result.stderr
    assert "resumed from" in result.stderr and "step 0" in result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 3 and "random_init" not in summary
