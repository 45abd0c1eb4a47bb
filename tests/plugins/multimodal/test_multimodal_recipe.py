"""recipes/image_text_clip.yaml end to end: two encoders, clip + mlm + simclr on the image side, evaluation,
ONNX export, and ``sslhub finetune`` of one tower, on one tiny run shared by the tests of this module."""

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


@pytest.fixture(scope="module")
def tiny_clip_run(tmp_path_factory: pytest.TempPathFactory, tiny_clip_overrides: dict[str, object]) -> Path:
    """The recipe shrunk to 12 steps of tiny towers, trained, evaluated and exported once."""
    out = tmp_path_factory.mktemp("clip") / "run"
    settings = {**tiny_clip_overrides, "train.log_every": 1, "evaluate.linear_probe.epochs": 10}
    overrides = [part for key, value in settings.items() for part in ("--set", f"{key}={value}")]
    result = sslhub("run", str(RECIPE), "--out", str(out), *overrides)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.mark.slow
def test_recipe_trains_its_three_objectives_evaluates_and_exports(tiny_clip_run: Path, tmp_path: Path):
    out = tiny_clip_run
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
    result = sslhub("embed", str(out), str(captions), "--encoder", "text", "--out", str(tmp_path / "e.npy"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "embedded 2 inputs (text)" in result.stdout

    # a head of an objective over two encoders applies to its own encoder only
    result = sslhub("export", str(out), "--include-head", "clip.image.projection", "--out", str(tmp_path / "heads"))
    assert result.returncode == 0, result.stderr[-2000:]
    image = json.loads((tmp_path / "heads" / "image" / "metadata.json").read_text())
    text = json.loads((tmp_path / "heads" / "text" / "metadata.json").read_text())
    assert image["output"]["head"] == "clip.image.projection" and text["output"]["head"] is None


@pytest.mark.slow
def test_finetune_asks_for_a_tower_then_trains_the_image_encoder(tiny_clip_run: Path):
    run = tiny_clip_run
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
