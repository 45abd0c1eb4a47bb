"""A random-init audio run (``train.steps: 0``) exports waveform front end + encoder and embeds WAV files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from toy_runs import sslhub

REPO = Path(__file__).resolve().parents[3]
BLOCKED = ["-p", "no:vision", "-p", "no:text"]

TINY_AUDIO = [
    "train.steps=0",
    "train.device=cpu",
    "train.batch_size=8",
    "data.source={type: default, num_clips: 40, num_classes: 4, cache: false}",
    "data.sample_rate=8000",
    "data.duration=0.5",
    "data.features={n_mels: 32, n_fft: 256, hop_length: 80}",
    "encoder.d_model=32",
    "encoder.num_layers=1",
    "evaluate.enabled=false",
]


@pytest.mark.parametrize("recipe", ["audio_masked", "audio_contrastive"])
@pytest.mark.slow
def test_the_random_init_export_embeds_with_sslhub_embed(tmp_path, recipe):
    run_dir = tmp_path / "run"
    overrides = [arg for item in TINY_AUDIO for arg in ("--set", item)]
    result = sslhub("run", str(REPO / "recipes" / f"{recipe}.yaml"), *BLOCKED, "--out", str(run_dir), *overrides)
    assert result.returncode == 0, result.stderr
    assert "random-init baseline run" in result.stdout
    metadata = json.loads((run_dir / "onnx" / "metadata.json").read_text())
    assert metadata["frontend"]["exported"], metadata["frontend"]
    assert metadata["frontend"]["rtol"] == metadata["verification"]["rtol"] == 1e-4

    exported = sslhub("export", str(run_dir), *BLOCKED, "--out", str(tmp_path / "onnx"))
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "onnx" / "frontend.onnx").is_file() and (tmp_path / "onnx" / "model.onnx").is_file()

    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (4000, 3000, 6000)]
    paths = []
    for i, clip in enumerate(clips):
        paths.append(tmp_path / f"clip{i}.wav")
        soundfile.write(paths[-1], clip, 8000, subtype="FLOAT")
    out = tmp_path / "embeddings.npy"
    embedded = sslhub("embed", str(tmp_path / "onnx"), *map(str, paths), "--out", str(out))
    assert embedded.returncode == 0, embedded.stderr
    vectors = np.load(out)
    assert vectors.shape == (3, 32) and np.isfinite(vectors).all()
    np.testing.assert_allclose(vectors, _pytorch_embeddings(run_dir, clips), atol=1e-3)


def _pytorch_embeddings(run_dir: Path, clips: list[np.ndarray]) -> np.ndarray:
    """The step-0 checkpoint's encoder on the same clips (padded/cropped to 0.5 s) in PyTorch."""
    from sslhub.cli import _load_run
    from sslhub.components import DEFAULT_ENCODER_KEY
    from sslhub_audio.features import fix_length

    _, trained = _load_run(run_dir, BLOCKED[1::2])
    modality, encoder = trained.modality, trained.encoders[DEFAULT_ENCODER_KEY]
    waveforms = torch.stack([fix_length(torch.from_numpy(c), 4000) for c in clips])
    encoder.eval()
    with torch.no_grad():
        return encoder({"features": modality.featurize(waveforms)}).pooled.numpy()
