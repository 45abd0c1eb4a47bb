"""Shared fixtures of the audio plugin tests: a short, small audio modality."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sslhub import BuildContext  # noqa: E402
from sslhub_audio.modality import AudioModality, AudioParams  # noqa: E402


@pytest.fixture
def small_audio() -> AudioModality:
    """0.5 s clips at 8 kHz, 32 mel bands (51 frames): quick to render and featurize."""
    return AudioModality(
        AudioParams(
            source={"type": "default", "num_clips": 200, "num_classes": 4},
            sample_rate=8000,
            duration=0.5,
            features={"n_mels": 32, "n_fft": 256, "hop_length": 80, "win_length": 200},
        )
    )


@pytest.fixture
def audio_context(small_audio: AudioModality) -> BuildContext:
    return BuildContext(modality=small_audio, modality_name="audio", seed=0)
