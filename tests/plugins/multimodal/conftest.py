"""Fixtures for the multimodal plugin tests: the embedded digit pairs and tiny encoders."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from sslhub import BuildContext, EncoderSet  # noqa: E402
from sslhub_multimodal.modality import ImageTextModality, ImageTextParams  # noqa: E402
from sslhub_text.encoders.hf_encoder import HFEncoder, HFParams  # noqa: E402
from sslhub_vision.encoders.small_cnn import SmallCNN, SmallCNNParams  # noqa: E402


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    """The test machine is small and shared: one intra-op thread avoids oversubscription
    (with other processes busy, two threads are several times slower than one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digit_pairs() -> ImageTextModality:
    """The embedded digit pairs at 16x16, captions up to 24 tokens."""
    modality = ImageTextModality(ImageTextParams(image_size=16, max_length=24))
    modality.prepare(None)
    return modality


@pytest.fixture
def make_encoders(digit_pairs):
    """``make_encoders(seed=0)``: a tiny ``small_cnn`` + ``hf`` pair as an EncoderSet."""

    def make(seed: int = 0) -> EncoderSet:
        torch.manual_seed(seed)
        context = BuildContext(modality=digit_pairs, modality_name="image_text")
        image = SmallCNN(SmallCNNParams(width=8, stages=2, stem_stride=1), context)
        text = HFEncoder(
            HFParams(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, dropout=0.0), context
        )
        return EncoderSet({"image": image, "text": text})

    return make


@pytest.fixture(scope="session")
def tiny_clip_overrides() -> dict[str, object]:
    """``--set`` values that shrink recipes/image_text_clip.yaml to a few seconds: 12 steps, tiny towers."""
    return {
        "train.steps": 12,
        "train.batch_size": 32,
        "train.checkpoint_every": 12,
        "data.image_size": 8,
        "encoders.image.width": 8,
        "encoders.image.stages": 2,
        "encoders.text.hidden_size": 32,
        "encoders.text.num_layers": 1,
        "encoders.text.intermediate_size": 64,
        "objectives.1.start_step": 6,
    }
