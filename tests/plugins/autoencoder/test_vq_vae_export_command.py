"""``sslhub export RUN`` writes the VQ tokenizer of a vq_vae run, as the run's end does.

A two-step run of the shipped recipe writes ``RUN/vq_tokenizer.onnx`` at its end; ``sslhub
export RUN --out DIR`` must write ``DIR/vq_tokenizer.onnx`` beside the encoder, verified, and
both must turn the same images into the same codes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from toy_runs import sslhub

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "vqvae_image.yaml"
SETTINGS = {
    "train.steps": "2",
    "train.batch_size": "16",
    "train.threads": "1",
    "evaluate.linear_probe": "null",
    "evaluate.few_shot": "null",
    "evaluate.random_init_baseline": "false",
    "evaluate.max_samples": "64",
    "report.enabled": "false",
}


@pytest.mark.slow
def test_export_command_writes_the_vq_tokenizer_like_the_run_end(tmp_path: Path):
    onnxruntime = pytest.importorskip("onnxruntime")
    run_dir, out = tmp_path / "run", tmp_path / "exported"
    options = [arg for key, value in SETTINGS.items() for arg in ("--set", f"{key}={value}")]
    result = sslhub("run", str(RECIPE), "--out", str(run_dir), "--progress", "off", *options, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "vq_tokenizer.onnx").is_file()

    exported = sslhub("export", str(run_dir), "--out", str(out), timeout=400)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "vq_vae/tokenizer: VQ tokenizer" in exported.stdout and "codes agree with PyTorch" in exported.stdout
    assert (out / "model.onnx").is_file() and (out / "vq_tokenizer.onnx").is_file()
    record = json.loads((out / "vq_tokenizer.onnx.json").read_text())
    assert record["passed"] and record["output"] == "codes"

    codes = []
    for path in (run_dir / "vq_tokenizer.onnx", out / "vq_tokenizer.onnx"):
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        image = session.get_inputs()[0]
        shape = [3, *image.shape[1:]]  # [batch, C, H, W] with the recipe's image size
        images = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        codes.append(session.run(None, {image.name: images})[0])
    assert codes[0].dtype == np.int64 and codes[0].shape[0] == 3
    np.testing.assert_array_equal(codes[0], codes[1])
