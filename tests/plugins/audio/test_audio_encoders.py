"""Audio encoders: shapes, frame counts, mask injection, ONNX export with dynamic batch and time."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch
from pydantic import ValidationError

from sslhub_audio.encoders.frame_transformer import (
    FrameTransformerEncoder,
    FrameTransformerParams,
    sinusoidal_positions,
)
from sslhub_audio.encoders.wav2vec2 import Wav2Vec2Encoder, Wav2Vec2Params


def _session(path) -> onnxruntime.InferenceSession:
    # No spinning worker threads: they would keep the (shared, 2-core) CPU busy after the test.
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


TINY = {"d_model": 32, "num_layers": 2, "num_heads": 4}


@pytest.fixture
def frame_encoder(audio_context) -> FrameTransformerEncoder:
    torch.manual_seed(0)
    return FrameTransformerEncoder(FrameTransformerParams(**TINY), audio_context).eval()


@pytest.mark.parametrize("frames", [51, 40, 17, 8])
def test_frame_transformer_shapes_and_frame_count(frame_encoder, frames):
    features = torch.randn(3, 32, frames)
    out = frame_encoder({"features": features})
    expected = -(-frames // 4)  # ceil(T / frame_rate_divisor)
    assert frame_encoder.frame_rate_divisor == 4
    assert out.tokens.shape == (3, expected, 32) and out.pooled.shape == (3, 32)
    assert frame_encoder.count_frames({"features": features}) == expected
    torch.testing.assert_close(out.pooled, out.tokens.mean(dim=1))


def test_forward_frames_puts_the_mask_embedding_before_the_transformer(frame_encoder):
    batch = {"features": torch.randn(2, 32, 51)}
    frames = frame_encoder.count_frames(batch)
    mask = torch.zeros(2, frames, dtype=torch.bool)
    embedding = torch.randn(32)
    unmasked = frame_encoder.forward_frames(batch, mask, embedding).tokens
    torch.testing.assert_close(unmasked, frame_encoder(batch).tokens)
    mask[0, 3:6] = True
    masked = frame_encoder.forward_frames(batch, mask, embedding).tokens
    assert torch.equal(masked[1], unmasked[1])  # samples do not interact
    assert not torch.allclose(masked[0], unmasked[0])  # attention spreads the change to all frames
    # What sits at masked frames no longer depends on the input there.
    other = {"features": batch["features"].clone()}
    # encoder frame j sees mel frames 4j-3 .. 4j+3 (two k=3, stride-2 convs): 14..20 feed only frames 3..5
    other["features"][0, :, 14:21] = torch.randn(32, 7)
    again = frame_encoder.forward_frames(other, mask, embedding).tokens
    torch.testing.assert_close(again[0], masked[0])
    with pytest.raises(ValueError, match="without a mask_embedding"):
        frame_encoder.forward_frames(batch, mask, None)


def test_sinusoidal_positions_follow_the_formula():
    codes = sinusoidal_positions(5, 8, torch.device("cpu"), torch.float32)
    position, i = 3, 1
    assert codes[position, i].item() == pytest.approx(np.sin(position / 10000 ** (i / 4)), abs=1e-6)
    assert codes[position, 4 + i].item() == pytest.approx(np.cos(position / 10000 ** (i / 4)), abs=1e-6)


def test_frame_transformer_rejects_bad_inputs_and_params(frame_encoder):
    with pytest.raises(ValueError, match=r"expects features \[batch, 32, frames\]"):
        frame_encoder({"features": torch.randn(2, 40, 51)})
    with pytest.raises(ValidationError, match=r"num_heads \(3\) must divide d_model \(32\)"):
        FrameTransformerParams(d_model=32, num_heads=3)
    with pytest.raises(ValidationError, match="kernel_size must be odd"):
        FrameTransformerParams(kernel_size=4)


def test_frame_transformer_exports_to_onnx_with_dynamic_batch_and_time(frame_encoder, tmp_path):
    example = torch.randn(2, 32, 51)
    batch_dim, time_dim = torch.export.Dim("batch"), torch.export.Dim("frames", min=8, max=4096)
    program = torch.onnx.export(
        frame_encoder.export_module().eval(),
        (example,),
        dynamo=True,
        input_names=["features"],
        dynamic_shapes=(({0: batch_dim, 2: time_dim},),),  # export_module().forward takes *inputs
        opset_version=18,
    )
    path = tmp_path / "audio.onnx"
    program.save(str(path))
    session = _session(path)
    for shape in [(5, 32, 51), (1, 32, 37), (3, 32, 80)]:
        features = torch.randn(*shape)
        (onnx_out,) = session.run(None, {"features": features.numpy()})
        with torch.no_grad():
            reference = frame_encoder({"features": features}).pooled.numpy()
        assert onnx_out.shape == reference.shape
        assert np.abs(onnx_out - reference).max() < 1e-4


def test_wav2vec2_builds_from_config_and_aligns_frames_with_log_mels(small_audio, audio_context):
    torch.manual_seed(0)
    params = Wav2Vec2Params(embed_dim=32, num_layers=1, num_heads=2, ff_dim=64, pos_conv_kernel=8, pos_conv_groups=4)
    encoder = Wav2Vec2Encoder(params, audio_context)
    batch = small_audio.example_batch(2)
    out = encoder(batch)
    assert out.tokens.shape == (2, encoder.count_frames(batch), 32) and out.pooled.shape == (2, 32)
    assert encoder.count_frames(batch) == 12  # 4000 samples, stride 320
    assert encoder.frame_rate_divisor == 320 // 80
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[:, :4] = True
    masked = encoder.forward_frames(batch, mask, torch.zeros(32)).tokens
    assert not torch.allclose(masked, out.tokens)
    with pytest.raises(ValidationError, match="conv_layers must be"):
        Wav2Vec2Params(conv_layers=[[32, 10]])


def test_wav2vec2_exports_to_onnx_with_dynamic_batch_and_samples(audio_context, tmp_path):
    torch.manual_seed(0)
    params = Wav2Vec2Params(embed_dim=32, num_layers=1, num_heads=2, ff_dim=64, pos_conv_kernel=8, pos_conv_groups=4)
    encoder = Wav2Vec2Encoder(params, audio_context).eval()
    samples = torch.export.Dim("samples", min=1000, max=160000)
    program = torch.onnx.export(
        encoder.export_module().eval(),
        (0.1 * torch.randn(2, 4000),),
        dynamo=True,
        input_names=["waveform"],
        dynamic_shapes=(({0: torch.export.Dim("batch"), 1: samples},),),
        opset_version=18,
    )
    path = tmp_path / "wav2vec2.onnx"
    program.save(str(path))
    session = _session(path)
    for shape in [(3, 4000), (1, 6000)]:
        waveform = 0.1 * torch.randn(*shape)
        (onnx_out,) = session.run(None, {"waveform": waveform.numpy()})
        with torch.no_grad():
            reference = encoder({"waveform": waveform}).pooled.numpy()
        assert np.abs(onnx_out - reference).max() < 1e-4
