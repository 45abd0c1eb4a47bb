"""The audio plugin's file decoder (sslhub_audio.files): waveforms for waveform models, the front end's
features for log-mel models, and no front end file from outside the model folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from sslhub.files import DecodeError, ModelInputs
from sslhub_audio.files import AudioDecoder

PREPROCESSING = {"sample_rate": 8000, "num_samples": 400}


def _model(folder: Path, names: tuple[str, ...], exported: dict | None = None, **options) -> ModelInputs:
    metadata = {"input_spec": {"preprocessing": PREPROCESSING}, "frontend": exported}
    return ModelInputs(names, metadata, folder, **options)


def _clip(path: Path, samples: int = 300) -> Path:
    soundfile.write(str(path), np.linspace(-0.5, 0.5, samples, dtype=np.float32), 8000)
    return path


def test_waveform_models_get_the_centered_waveform(tmp_path):
    decoder = AudioDecoder(_model(tmp_path, ("waveform",)))
    ((source, waveform),) = decoder.read(_clip(tmp_path / "a.wav"))
    batch = decoder.collate([waveform])
    assert source == str(tmp_path / "a.wav") and batch["waveform"].shape == (1, 400)
    assert np.all(batch["waveform"][0, :50] == 0) and np.all(batch["waveform"][0, -50:] == 0)


def test_only_audio_inputs_with_a_sample_rate_are_accepted(tmp_path):
    assert AudioDecoder.accepts(_model(tmp_path, ("features",)))
    assert not AudioDecoder.accepts(_model(tmp_path, ("image",)))
    assert not AudioDecoder.accepts(ModelInputs(("waveform",), {"input_spec": {"preprocessing": {}}}, tmp_path))


def test_a_front_end_given_by_the_caller_makes_the_features(tmp_path):
    def frontend(arrays):
        return {"features": arrays["waveform"][:, None, :] * 2}

    decoder = AudioDecoder(_model(tmp_path, ("features",), frontend=frontend))
    ((_, waveform),) = decoder.read(_clip(tmp_path / "a.wav", 400))
    np.testing.assert_allclose(decoder.collate([waveform])["features"][0, 0], waveform * 2)


@pytest.mark.parametrize("name", ["../frontend.onnx", "/tmp/frontend.onnx", "sub/../../frontend.onnx"])
def test_a_front_end_file_outside_the_model_folder_is_refused(tmp_path, name):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "frontend.onnx").write_bytes(b"not read")
    decoder = AudioDecoder(_model(folder, ("features",), {"exported": True, "file": name}))
    ((_, waveform),) = decoder.read(_clip(tmp_path / "a.wav"))
    with pytest.raises(DecodeError, match=f"frontend.file {name!r} leads outside {folder}"):
        decoder.collate([waveform])


def test_a_log_mel_model_without_an_exported_front_end_says_so(tmp_path):
    decoder = AudioDecoder(_model(tmp_path, ("features",), {"exported": False, "reason": "torch.stft not exportable"}))
    ((_, waveform),) = decoder.read(_clip(tmp_path / "a.wav"))
    with pytest.raises(DecodeError, match=r"no waveform front end was exported \(torch.stft not exportable\)"):
        decoder.collate([waveform])
