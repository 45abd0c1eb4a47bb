"""recipes/image_text_clip.yaml end to end: two encoders, clip + mlm + simclr on the image side, evaluation, ONNX export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
RECIPE = ROOT / "recipes" / "image_text_clip.yaml"


@pytest.mark.slow
def test_recipe_trains_its_three_objectives_evaluates_and_exports(tmp_path, tiny_clip_overrides):
    out = tmp_path / "run"
    overrides = {**tiny_clip_overrides, "train.log_every": 1, "evaluate.linear_probe.epochs": 10}
    command = [sys.executable, "-m", "sslhub", "run", str(RECIPE), "--out", str(out)]
    for key, value in overrides.items():
        command += ["--set", f"{key}={value}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 12
    # each objective's loss is logged on its own; mlm only from its start_step (6) on
    assert all("clip/loss" in r and "clip/image_to_text_accuracy" in r for r in records)
    assert [("mlm/loss" in r) for r in records] == [False] * 6 + [True] * 6
    # SLIP's image-only term trains from the first step, on two views of each image
    assert all("simclr/loss" in r and "simclr/contrastive_accuracy" in r for r in records)
    summary = json.loads((out / "summary.json").read_text())
    evaluation = summary["evaluation"]
    for candidate in ("trained", "random_init"):
        for key in ("image/knn_accuracy", "text/knn_accuracy", "image/linear_probe_accuracy", "clip/loss"):
            assert key in evaluation[candidate], (candidate, key)
    # each side's raw input (pixels, a bag of words over the caption) under its encoder's key
    assert {"image/knn_accuracy", "text/few_shot_5_accuracy", "text/linear_probe_accuracy"} <= evaluation[
        "raw_input"
    ].keys()
    assert any("raw-input baseline on text kNN" in line for line in evaluation["verdict"])
    clip = evaluation["objectives"]["clip"]
    assert {"trained", "random_init", "chance", "examples"} <= clip.keys()
    assert clip["random_init_source"] == "the engine's random-init baseline"
    assert "zero_shot_accuracy" in clip["trained"] and "image_to_text_recall@5" in clip["trained"]
    assert "held_out" in evaluation["objectives"]["mlm"]
    for key in ("image", "text"):
        assert summary["export"][key]["passed"], summary["export"][key]
        assert (out / "onnx" / key / "model.onnx").is_file()
    assert (out / "tokenizer.json").is_file()

    # the text model travels with its tokenizer; embed picks one encoder of the run
    assert (out / "onnx" / "text" / "tokenizer.json").is_file()
    assert not (out / "onnx" / "image" / "tokenizer.json").exists()  # the image model reads no tokens
    captions = tmp_path / "captions.txt"
    captions.write_text("a handwritten seven\na handwritten zero\n")
    embed = [sys.executable, "-m", "sslhub", "embed", str(out), str(captions), "--encoder", "text"]
    result = subprocess.run(
        embed + ["--out", str(tmp_path / "e.npy")], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "embedded 2 inputs (text)" in result.stdout

    # a head of an objective over two encoders applies to its own encoder only
    export = [sys.executable, "-m", "sslhub", "export", str(out), "--include-head", "clip.image.projection"]
    result = subprocess.run(
        export + ["--out", str(tmp_path / "heads")], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    image = json.loads((tmp_path / "heads" / "image" / "metadata.json").read_text())
    text = json.loads((tmp_path / "heads" / "text" / "metadata.json").read_text())
    assert image["output"]["head"] == "clip.image.projection" and text["output"]["head"] is None
