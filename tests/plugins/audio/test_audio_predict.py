"""`sslhub predict` on audio files: the classifier's front end is exported too, and output equals PyTorch's."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

from sslhub import BuildContext
from sslhub.export import export_classifier
from sslhub_audio.encoders.frame_transformer import FrameTransformerEncoder, FrameTransformerParams
from sslhub_audio.features import fix_length
from sslhub_audio.modality import AudioModality, AudioParams

CLASSES = ["low", "mid", "high"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    modality = AudioModality(
        AudioParams(
            source={"type": "default", "num_clips": 40, "num_classes": 4},
            sample_rate=8000,
            duration=0.5,
            features={"n_mels": 32, "n_fft": 256, "hop_length": 80, "win_length": 200},
        )
    )
    torch.manual_seed(0)
    encoder = FrameTransformerEncoder(
        FrameTransformerParams(d_model=32, num_layers=1, num_heads=4),
        BuildContext(modality=modality, modality_name="audio"),
    ).eval()
    head = torch.nn.Linear(encoder.feature_dim, len(CLASSES))
    out = tmp_path_factory.mktemp("finetune") / "model"
    report = export_classifier(encoder, head, modality, CLASSES, out)
    assert report["passed"] and (out / "classifier.frontend.onnx").is_file()
    return modality, encoder, head, out


def test_predicting_audio_files_gives_pytorchs_probabilities(classifier, tmp_path):
    modality, encoder, head, out = classifier
    dataset = modality.train_dataset()
    # one clip at the model length, one shorter (padded), one longer (cropped), as in training
    lengths = [modality.num_samples, modality.num_samples - 700, modality.num_samples + 900]
    paths = []
    for index, length in enumerate(lengths):
        waveform = dataset[index]["waveform"]
        audio = torch.nn.functional.pad(waveform, (0, max(0, length - waveform.shape[0])))[:length]
        paths.append(tmp_path / f"clip{index}.wav")
        soundfile.write(paths[-1], audio.numpy(), modality.params.sample_rate, subtype="FLOAT")

    result = subprocess.run(
        [sys.executable, "-m", "sslhub", "predict", str(out), *map(str, paths), "--out", str(tmp_path / "p.csv"),
         "--threads", "1"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "predicted 3 inputs (audio)" in result.stdout
    with (tmp_path / "p.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    waveforms = torch.stack(
        [fix_length(torch.from_numpy(soundfile.read(p, dtype="float32")[0]), modality.num_samples) for p in paths]
    )
    with torch.no_grad():
        pooled = encoder({"features": modality.featurize(waveforms)}).pooled
        expected = torch.softmax(head(pooled), dim=-1).numpy()
    assert [row[0] for row in rows] == [str(p) for p in paths]
    np.testing.assert_allclose(np.array([row[2:] for row in rows], dtype=np.float64), expected, atol=1e-4)
    assert [row[1] for row in rows] == [CLASSES[i] for i in expected.argmax(1)]
