"""``sslhub finetune`` on an image_text run: it needs ``--encoder``, then fine-tunes and exports that tower."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
RECIPE = ROOT / "recipes" / "image_text_clip.yaml"


def sslhub(*arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "sslhub", *arguments]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_finetune_asks_for_a_tower_then_trains_the_image_encoder(tmp_path, tiny_clip_overrides):
    run = tmp_path / "run"
    settings = {**tiny_clip_overrides, "evaluate.enabled": "false", "export": "null"}
    overrides = [part for key, value in settings.items() for part in ("--set", f"{key}={value}")]
    trained = sslhub("run", str(RECIPE), "--out", str(run), *overrides)
    assert trained.returncode == 0, trained.stderr[-3000:]

    unnamed = sslhub("finetune", str(run))
    assert unnamed.returncode != 0 and "Traceback" not in unnamed.stderr
    assert "several encoders (image, text): choose one with --encoder" in unnamed.stderr

    options = ["--set", "finetune.steps=20", "--set", "finetune.compare=null"]
    tuned = sslhub("finetune", str(run), "--encoder", "image", *options)
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    result = json.loads((run / "finetune" / "default" / "finetune.json").read_text())
    assert result["encoder_key"] == "image" and result["steps"] == 20
    assert result["class_names"] == ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert (run / "finetune" / "default" / "model" / "classifier.onnx").is_file()
    assert "passed" in tuned.stdout  # the exported classifier checked against PyTorch
