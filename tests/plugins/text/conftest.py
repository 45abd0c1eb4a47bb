"""Fixtures for the text plugin tests: a small-vocabulary text modality and tiny encoders."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from sslhub import BuildContext  # noqa: E402
from sslhub_text.encoders.hf_encoder import HFEncoder, HFParams  # noqa: E402
from sslhub_text.modality import TextModality, TextParams, TrainTokenizer  # noqa: E402

# One intra-op thread: these models are tiny, and on a shared 2-core machine two threads per
# op mostly wait on each other (the MLM training test ran 26 s with 2 threads, 7 s with 1).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def text_modality() -> TextModality:
    """The embedded pydoc corpus with a 1000-token WordPiece vocabulary, 32-token samples."""
    modality = TextModality(TextParams(max_length=32, tokenizer=TrainTokenizer(vocab_size=1000)))
    modality.prepare(None)
    return modality


@pytest.fixture
def make_encoder(text_modality):
    """``make_encoder(**hf_params)``: a tiny seeded ``hf`` encoder on ``text_modality``."""

    def make(**overrides) -> HFEncoder:
        torch.manual_seed(0)
        params = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, **overrides}
        return HFEncoder(HFParams(**params), BuildContext(modality=text_modality, modality_name="text"))

    return make


@pytest.fixture(scope="session")
def tokenizer_dir(text_modality, tmp_path_factory):
    """A folder holding ``text_modality``'s tokenizer.json, for modalities that must share its ids."""
    folder = tmp_path_factory.mktemp("tokenizer")
    text_modality.tokenizer.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture
def onnx_session(text_modality, tmp_path):
    """``onnx_session(encoder)``: the encoder exported with dynamic batch and sequence, opened in onnxruntime."""
    onnxruntime = pytest.importorskip("onnxruntime")

    def export(encoder):
        example = text_modality.example_batch(2)
        program = torch.onnx.export(
            encoder.export_module(),
            (example["input_ids"], example["attention_mask"]),
            dynamo=True,
            input_names=list(encoder.input_names),
            output_names=["pooled"],
            dynamic_shapes=({0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")},) * 2,
            verbose=False,
        )
        program.save(str(tmp_path / "encoder.onnx"))
        return onnxruntime.InferenceSession(str(tmp_path / "encoder.onnx"))

    return export
