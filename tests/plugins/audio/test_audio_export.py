"""Audio export: the waveform front end beside the encoder, and `sslhub embed` on audio files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from sslhub.embed_files import EmbedError, FileEmbedder
from sslhub.export import export_encoder
from sslhub_audio.encoders.frame_transformer import FrameTransformerEncoder, FrameTransformerParams
from sslhub_audio.features import fix_length


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny frame transformer on the small audio modality, exported with its front end."""
    from sslhub import BuildContext
    from sslhub_audio.modality import AudioModality, AudioParams

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
        FrameTransformerParams(d_model=32, num_layers=2, num_heads=4),
        BuildContext(modality=modality, modality_name="audio"),
    ).eval()
    out = tmp_path_factory.mktemp("audio_export")
    report = export_encoder(encoder, modality, out, modality_name="audio")
    return modality, encoder, out, report


def _pytorch_embeddings(modality, encoder, waveforms: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return encoder({"features": modality.featurize(waveforms)}).pooled.numpy()


def test_front_end_is_exported_and_verified_through_the_encoder(exported):
    _, _, out, report = exported
    frontend = report.metadata["frontend"]
    assert (out / "frontend.onnx").is_file() and frontend["exported"], frontend
    assert frontend["input_names"] == ["waveform"] and frontend["output_names"] == ["features"]
    assert frontend["end_to_end_max_abs_diff"] <= report.atol
    assert len(frontend["checks"]) >= 3  # several batch sizes and lengths, not the traced one
    assert "frontend.onnx turns waveform into features" in report.metadata["expects"]


def test_embed_wav_files_matches_the_pytorch_path(exported, tmp_path):
    modality, encoder, out, _ = exported
    dataset = modality.train_dataset()
    waveforms = [dataset[i]["waveform"] for i in range(3)]
    # one file shorter than the clip length and one longer: embed pads/crops like training
    lengths = [modality.num_samples, modality.num_samples - 700, modality.num_samples + 900]
    paths = []
    for index, (waveform, length) in enumerate(zip(waveforms, lengths, strict=True)):
        audio = torch.nn.functional.pad(waveform, (0, max(0, length - waveform.shape[0])))[:length]
        path = tmp_path / f"clip{index}.wav"
        soundfile.write(path, audio.numpy(), modality.params.sample_rate, subtype="FLOAT")
        paths.append(path)

    embeddings = FileEmbedder(out, threads=1).embed(paths, batch_size=2)

    expected_inputs = torch.stack(
        [fix_length(torch.from_numpy(soundfile.read(p, dtype="float32")[0]), modality.num_samples) for p in paths]
    )
    expected = _pytorch_embeddings(modality, encoder, expected_inputs)
    assert embeddings.sources == [str(p) for p in paths]
    np.testing.assert_allclose(embeddings.vectors, expected, atol=1e-3)


def test_other_sample_rates_and_stereo_are_resampled_and_mixed(exported, tmp_path):
    modality, encoder, out, _ = exported
    waveform = modality.train_dataset()[0]["waveform"]
    stereo = torchaudio.functional.resample(waveform, modality.params.sample_rate, 16000)
    path = tmp_path / "stereo16k.wav"
    soundfile.write(path, torch.stack([stereo, stereo], dim=1).numpy(), 16000, subtype="FLOAT")

    vector = FileEmbedder(out, threads=1).embed([path]).vectors[0]
    reference = _pytorch_embeddings(modality, encoder, waveform[None])[0]
    cosine = float(vector @ reference / (np.linalg.norm(vector) * np.linalg.norm(reference)))
    assert cosine > 0.99


def test_unreadable_audio_names_the_file(exported, tmp_path):
    _, _, out, _ = exported
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(EmbedError, match="broken.wav: cannot decode the audio"):
        FileEmbedder(out, threads=1).embed([broken])
