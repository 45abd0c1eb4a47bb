"""The wav2vec2 encoder's native export loads in torchaudio; audio files preprocess as sslhub embed does."""

from __future__ import annotations

import json

import numpy as np
import soundfile
import torch
import torchaudio

import sslhub
from sslhub import EncoderSet
from sslhub.export_formats import EncoderDescription, write_weight_formats
from sslhub.preprocessing import InputPreprocessor
from sslhub_audio.encoders.wav2vec2 import Wav2Vec2Encoder, Wav2Vec2Params

PARAMS = {"embed_dim": 32, "num_layers": 1, "num_heads": 2, "ff_dim": 64, "pos_conv_kernel": 8, "pos_conv_groups": 4}


def _encoder(audio_context) -> Wav2Vec2Encoder:
    torch.manual_seed(0)
    return Wav2Vec2Encoder(Wav2Vec2Params(**PARAMS), audio_context).eval()


def test_torchaudio_builder_loads_the_state_dict_and_gives_the_same_frames(audio_context, small_audio, tmp_path):
    encoder = _encoder(audio_context)
    assert set(encoder.export_native(tmp_path, small_audio)) == {"model.pt", "wav2vec2_config.json"}
    config = json.loads((tmp_path / "wav2vec2_config.json").read_text())
    torch.manual_seed(5)  # another random init: only the state dict can make the outputs agree
    model = torchaudio.models.wav2vec2_model(**config).eval()
    model.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    waveform = 0.1 * torch.randn(2, 4000)
    with torch.no_grad():
        frames, _ = model(waveform)
        output = encoder({"waveform": waveform})
    torch.testing.assert_close(frames, output.tokens)
    torch.testing.assert_close(frames.mean(dim=1), output.pooled)


def test_export_folder_loads_and_preprocesses_audio_files(audio_context, small_audio, tmp_path):
    encoder = _encoder(audio_context)
    description = EncoderDescription("wav2vec2", Wav2Vec2Params(**PARAMS).model_dump(mode="json"), "audio", seed=0)
    formats = ("safetensors", "native")
    write_weight_formats(EncoderSet({"default": encoder}), small_audio, {"default": description}, tmp_path, formats)
    loaded = sslhub.load_encoder(tmp_path)
    clip = 0.1 * np.random.default_rng(0).standard_normal(3000).astype(np.float32)  # shorter than 4000: padded
    soundfile.write(tmp_path / "clip.wav", clip, 8000)
    inputs = loaded.preprocess([tmp_path / "clip.wav"])
    assert inputs["waveform"].shape == (1, 4000)
    expected = torch.from_numpy(np.pad(clip, (500, 500)))[None]
    torch.testing.assert_close(inputs["waveform"], expected, atol=1e-4, rtol=0)  # 16-bit wav rounding
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), encoder(inputs).pooled)


def test_a_front_end_module_makes_the_features_the_modality_makes(small_audio, tmp_path):
    clip = 0.1 * np.random.default_rng(1).standard_normal(4000).astype(np.float32)
    soundfile.write(tmp_path / "clip.wav", clip, 8000, subtype="FLOAT")
    frontend = small_audio.export_frontend().module.eval()
    preprocess = InputPreprocessor(["features"], small_audio.input_spec()["preprocessing"], tmp_path, frontend=frontend)
    features = preprocess.batch([tmp_path / "clip.wav"], [])["features"]
    expected = small_audio.on_device({"waveform": torch.from_numpy(clip)[None]})["features"]
    torch.testing.assert_close(torch.from_numpy(features), expected)
