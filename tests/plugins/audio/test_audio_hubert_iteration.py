"""HuBERT's second iteration: masked_audio clusters a trained encoder's intermediate frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from toy_runs import final_weights, sslhub

from sslhub_audio.encoders.frame_transformer import FrameTransformerEncoder, FrameTransformerParams
from sslhub_audio.encoders.wav2vec2 import Wav2Vec2Encoder, Wav2Vec2Params
from sslhub_audio.objectives.masked_audio import MaskedAudioParams

REPO = Path(__file__).resolve().parents[3]
BLOCKED = ["-p", "no:vision", "-p", "no:text"]


def test_frame_transformer_hidden_frames_are_the_blocks_outputs(audio_context, small_audio):
    torch.manual_seed(0)
    encoder = FrameTransformerEncoder(FrameTransformerParams(d_model=32, num_layers=3, num_heads=4), audio_context)
    encoder.eval()
    batch = small_audio.example_batch(2)
    assert encoder.num_context_layers == 3
    last = encoder.hidden_frames(batch, 3)
    torch.testing.assert_close(encoder.norm(last), encoder(batch).tokens)
    first = encoder.hidden_frames(batch, 1)
    assert first.shape == last.shape and not torch.allclose(first, last)
    with pytest.raises(ValueError, match="context layers 1..3, not 4"):
        encoder.hidden_frames(batch, 4)


def test_wav2vec2_hidden_frames_are_the_transformer_layers(audio_context, small_audio):
    torch.manual_seed(0)
    params = Wav2Vec2Params(embed_dim=32, num_layers=2, num_heads=2, ff_dim=64, pos_conv_kernel=8, pos_conv_groups=4)
    encoder = Wav2Vec2Encoder(params, audio_context).eval()
    batch = small_audio.example_batch(2)
    torch.testing.assert_close(encoder.hidden_frames(batch, 2), encoder(batch).tokens)
    assert encoder.hidden_frames(batch, 1).shape == (2, encoder.count_frames(batch), 32)


def test_a_teacher_is_only_for_cluster_targets():
    with pytest.raises(ValidationError, match="teacher is for target 'clusters'"):
        MaskedAudioParams(teacher="runs/first")
    with pytest.raises(ValidationError, match="teacher_layer needs a teacher"):
        MaskedAudioParams(target="clusters", teacher_layer=1)


TINY = [
    "data.source={type: default, num_clips: 64, num_classes: 4, cache: false}",
    "data.sample_rate=8000",
    "data.duration=0.5",
    "data.features={n_mels: 32, n_fft: 256, hop_length: 80}",
    "augment=[]",
    "encoder.d_model=32",
    "encoder.num_layers=2",
    "encoder.num_heads=2",
    "objectives=[{name: masked_audio, target: clusters, num_clusters: 12, kmeans_clips: 48, mask_span: 2, "
    "mask_start_probability: 0.15}]",
    "train.steps=30",
    "train.batch_size=16",
    "train.optimizer.lr=3e-3",
    "train.device=cpu",
    "train.threads=1",
    "train.log_every=1",
    "evaluate.knn={k: 5}",
    "evaluate.linear_probe={epochs: 5}",
    "export=null",
]


def _run(out: Path, *overrides: str):
    arguments = [a for item in (*TINY, *overrides) for a in ("--set", item)]
    return sslhub("run", str(REPO / "recipes" / "audio_masked.yaml"), *BLOCKED, "--out", str(out), *arguments)


def _losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["masked_audio/loss"] for line in lines if "masked_audio/loss" in line]


@pytest.mark.slow
def test_the_second_iteration_learns_the_first_models_clusters(tmp_path):
    first = tmp_path / "iteration1"
    result = _run(first)
    assert result.returncode == 0, result.stderr[-3000:]
    second = tmp_path / "iteration2"
    result = _run(second, f"objectives.0.teacher={first}", "objectives.0.teacher_layer=1")
    assert result.returncode == 0, result.stderr[-3000:]
    losses = _losses(second)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:3]) / 3, losses
    weights = final_weights(second)
    centroids = [tuple(v.shape) for k, v in weights.items() if k.endswith("centroids")]
    # Clustered in the teacher's 32-wide frame space, not the 32 mel x 4 stacked log-mel frames.
    assert centroids == [(12, 32)]
    # The teacher is read, never trained nor saved: the checkpoint holds one encoder's weights.
    assert len(weights) == len(final_weights(first))


def test_a_missing_teacher_is_named_at_build(tmp_path):
    result = _run(tmp_path / "run", f"objectives.0.teacher={tmp_path / 'nowhere'}")
    assert result.returncode != 0
    assert "masked_audio teacher" in result.stderr and "nowhere" in result.stderr
    assert "Traceback" not in result.stderr
