"""Frame read-outs of the frame encoders (log-mel and wav2vec2): temporal pyramid and statistics pooling."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch

from sslhub import BuildContext
from sslhub_audio.encoders.causal_frame_transformer import (
    CausalFrameTransformerEncoder,
    CausalFrameTransformerParams,
)
from sslhub_audio.encoders.frame_transformer import FrameTransformerEncoder, FrameTransformerParams
from sslhub_audio.encoders.time_pooling import TimePool, segment_weights
from sslhub_audio.encoders.wav2vec2 import Wav2Vec2Encoder, Wav2Vec2Params
from sslhub_audio.objectives.apc import APCObjective, APCParams
from sslhub_audio.objectives.masked_audio import MaskedAudioObjective, MaskedAudioParams
from sslhub_audio.objectives.wav2vec2 import Wav2Vec2Objective, Wav2Vec2ObjectiveParams


def test_pyramid_levels_average_equal_stretches_of_the_clip():
    tokens = torch.arange(6, dtype=torch.float32).reshape(1, 6, 1)  # frames 0..5, one channel
    pooled = TimePool(levels=[1, 2, 3])(tokens)
    expected = [2.5, 1.0, 4.0, 0.5, 2.5, 4.5]  # whole; halves; thirds
    torch.testing.assert_close(pooled, torch.tensor([expected]))


def test_uneven_lengths_split_as_equally_as_possible_and_short_clips_do_not_divide_by_zero():
    weights = segment_weights(7, [2], torch.device("cpu"), torch.float32)
    assert weights.shape == (7, 2)
    assert (weights > 0).sum(dim=0).tolist() == [4, 3]
    torch.testing.assert_close(weights.sum(dim=0), torch.ones(2))
    short = segment_weights(2, [4], torch.device("cpu"), torch.float32)
    assert torch.isfinite(short).all() and (short.sum(dim=0) <= 1).all()


def test_std_pooling_appends_the_spread_over_time():
    tokens = torch.tensor([[[1.0, 5.0], [3.0, 5.0]]])  # [1, 2 frames, 2 channels]
    pooled = TimePool(levels=[1], std=True)(tokens)
    assert pooled.shape == (1, 4)
    torch.testing.assert_close(pooled[0, :2], torch.tensor([2.0, 5.0]))
    assert abs(pooled[0, 2].item() - 1.0) < 1e-4 and pooled[0, 3].item() < 1e-2


def test_bad_levels_are_refused():
    with pytest.raises(ValueError, match="pool_levels"):
        TimePool(levels=[0, 2])


@pytest.mark.parametrize("encoder_type", ["frame", "causal"])
def test_encoders_widen_pooled_and_frame_heads_keep_the_token_width(audio_context, encoder_type):
    options = {"d_model": 32, "num_layers": 1, "num_heads": 4, "pool_levels": [1, 2], "pool_std": True}
    if encoder_type == "frame":
        encoder = FrameTransformerEncoder(FrameTransformerParams(**options), audio_context)
    else:
        encoder = CausalFrameTransformerEncoder(CausalFrameTransformerParams(**options), audio_context)
    out = encoder({"features": torch.randn(3, 32, 51)})
    assert encoder.feature_dim == 32 * 4 and encoder.token_dim == 32
    assert out.pooled.shape == (3, 128) and out.tokens.shape[-1] == 32
    torch.testing.assert_close(out.pooled[:, :32], out.tokens.mean(dim=1))
    context = BuildContext(modality=audio_context.modality, modality_name="audio", seed=0, encoder=encoder)
    objective = (
        MaskedAudioObjective(MaskedAudioParams(mask_span=2), context)
        if encoder_type == "frame"
        else APCObjective(APCParams(steps_ahead=2), context)
    )
    loss = objective([{"features": torch.randn(3, 32, 51)}], encoder).loss
    assert torch.isfinite(loss)


def test_wav2vec2_statistics_pooling_widens_pooled_and_its_objective_keeps_the_frame_width(audio_context):
    params = Wav2Vec2Params(
        conv_layers=[[16, 10, 5], [16, 3, 2], [16, 2, 2]],
        embed_dim=32,
        num_layers=1,
        num_heads=4,
        pos_conv_kernel=4,
        pos_conv_groups=4,
        pool_std=True,
    )
    encoder = Wav2Vec2Encoder(params, audio_context)
    waveform = torch.randn(3, 4000)
    out = encoder({"waveform": waveform})
    assert encoder.feature_dim == 64 and encoder.token_dim == 32
    assert out.pooled.shape == (3, 64) and out.tokens.shape[-1] == 32
    torch.testing.assert_close(out.pooled[:, :32], out.tokens.mean(dim=1))
    torch.testing.assert_close(out.pooled[:, 32:], (out.tokens.var(dim=1, unbiased=False) + 1e-5).sqrt())
    context = BuildContext(modality=audio_context.modality, modality_name="audio", seed=0, encoder=encoder)
    objective = Wav2Vec2Objective(Wav2Vec2ObjectiveParams(mask_span=2, num_negatives=2), context)
    loss = objective([{"waveform": waveform}], encoder).loss
    assert torch.isfinite(loss)


def test_pyramid_read_out_exports_to_onnx_with_dynamic_time(audio_context, tmp_path):
    params = FrameTransformerParams(d_model=32, num_layers=1, num_heads=4, pool_levels=[1, 2, 3], pool_std=True)
    encoder = FrameTransformerEncoder(params, audio_context).eval()
    batch_dim, time_dim = torch.export.Dim("batch"), torch.export.Dim("frames", min=16, max=4096)
    program = torch.onnx.export(
        encoder.export_module().eval(),
        (torch.randn(2, 32, 51),),
        dynamo=True,
        input_names=["features"],
        dynamic_shapes=(({0: batch_dim, 2: time_dim},),),
        opset_version=18,
    )
    path = tmp_path / "audio.onnx"
    program.save(str(path))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for shape in [(5, 32, 51), (1, 32, 37), (3, 32, 80)]:
        features = torch.randn(*shape)
        (onnx_out,) = session.run(None, {"features": features.numpy()})
        with torch.no_grad():
            reference = encoder({"features": features}).pooled.numpy()
        assert onnx_out.shape == reference.shape
        assert np.abs(onnx_out - reference).max() < 1e-4
