"""The audio modality: synthetic default data, folder source, log-mel features, spec."""

from __future__ import annotations

import logging
import math
import pickle

import numpy as np
import pytest
import soundfile
import torch
import torchaudio
from pydantic import ValidationError

import sslhub
from sslhub.evaluate import knn_accuracy
from sslhub_audio.features import fix_length
from sslhub_audio.modality import AudioModality, AudioParams
from sslhub_audio.synthetic import SyntheticWords, word_inventory


def test_plugin_registers_its_components():
    catalog = sslhub.Catalog.load()
    assert "audio" in catalog.modalities
    for name in ("time_mask", "frequency_mask", "random_gain", "additive_noise", "time_shift"):
        assert catalog.augmentations.get(name).modalities == frozenset({"audio"})
    for name in ("frame_transformer", "wav2vec2", "hubert"):
        assert "tokens" in catalog.encoders.get(name).provides
    assert catalog.objectives.get("masked_audio").requires == frozenset({"tokens", "frame_masking"})


def test_word_inventory_pairs_words_with_their_reversal():
    words = word_inventory(10, seed=0)
    assert len(set(words)) == 10
    for first, second in zip(words[::2], words[1::2], strict=True):
        assert second == first[::-1]
        assert sorted(first) == sorted(second)  # same syllables: only the order tells them apart


def test_synthetic_clips_are_deterministic_per_index_and_labeled_round_robin():
    corpus = SyntheticWords(num_classes=4, sample_rate=8000, num_samples=4000, seed=3)
    a, b = corpus.render(7), corpus.render(7)
    assert a.dtype == np.float32 and a.shape == (4000,)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, corpus.render(8))
    assert np.abs(a).max() <= 1.0 and np.abs(a).max() > 0.01
    assert [corpus.label(i) for i in range(6)] == [0, 1, 2, 3, 0, 1]
    assert not np.array_equal(a, SyntheticWords(4, 8000, 4000, seed=4).render(7))


def test_splits_are_disjoint_and_eval_samples_carry_labels(small_audio: AudioModality):
    train = small_audio.train_dataset()
    split = small_audio.eval_split()
    held_out = small_audio.held_out_dataset()
    assert len(train) == 160 and len(held_out) == 40
    assert set(train.indices).isdisjoint(held_out.indices)
    assert split.test.indices == held_out.indices
    sample = split.test[0]
    assert sample["label"].dtype == torch.int64 and sample["label"].dim() == 0
    assert set(train[0]) == {"waveform"}
    assert train[0]["waveform"].shape == (4000,)
    assert len(split.class_names) == 4
    pickle.loads(pickle.dumps(train))  # DataLoader workers need picklable datasets


def test_on_device_features_match_a_hand_computed_log_mel(small_audio: AudioModality):
    batch = small_audio.collate([small_audio.train_dataset()[i] for i in range(3)])
    out = small_audio.on_device(batch)
    assert torch.equal(out["waveform"], batch["waveform"])
    features = out["features"]
    assert features.shape == (3, 32, 4000 // 80 + 1)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, n_mels=32)
    reference = torch.log(mel(batch["waveform"]) + 1e-6)
    reference = (reference - reference.mean(dim=(1, 2), keepdim=True)) / reference.std(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(features, reference, atol=1e-4, rtol=1e-4)
    assert small_audio.info().as_dict() == {
        "n_mels": 32,
        "sample_rate": 8000,
        "frames": 51,
        "hop_length": 80,
        "num_samples": 4000,
    }


def test_fix_length_center_crops_and_pads_symmetrically():
    x = torch.arange(10.0)
    assert fix_length(x, 4).tolist() == [3.0, 4.0, 5.0, 6.0]
    assert fix_length(torch.ones(3), 6).tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert fix_length(x, 10) is x


def test_input_spec_declares_dynamic_batch_and_time(small_audio: AudioModality):
    spec = small_audio.input_spec()
    assert spec["inputs"]["features"] == {"dtype": "float32", "shape": ["batch", 32, "frames"]}
    assert spec["dynamic_axes"]["features"] == {0: "batch", 2: "frames"}
    pre = spec["preprocessing"]
    assert (pre["sample_rate"], pre["n_mels"], pre["hop_length"], pre["n_fft"], pre["win_length"]) == (
        8000,
        32,
        80,
        256,
        200,
    )
    example = small_audio.example_batch(2)
    assert example["features"].shape == (2, 32, 51) and example["waveform"].shape == (2, 4000)


def _write(path, data, rate, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), data, rate, **kwargs)


def test_folder_source_reads_resamples_mixes_down_and_skips_bad_files(tmp_path, caplog):
    t = np.arange(22050) / 22050
    _write(tmp_path / "dog" / "a.wav", 0.5 * np.sin(2 * math.pi * 440 * t), 22050)  # 1 s at 22.05 kHz
    stereo = np.stack([np.sin(2 * math.pi * 220 * t[:11025]), np.zeros(11025)], axis=1)
    _write(tmp_path / "dog" / "b.flac", stereo, 22050)  # 0.5 s stereo
    _write(tmp_path / "cat" / "c.wav", 0.1 * np.ones(24000), 16000)  # 1.5 s: center crop
    _write(tmp_path / "cat" / "d.WAV", 0.2 * np.ones(16000), 16000)
    _write(tmp_path / "cat" / "empty.wav", np.zeros(0), 16000)
    (tmp_path / "cat" / "broken.wav").write_bytes(b"not a wav file")
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    modality = AudioModality(AudioParams(source={"type": "folder", "path": tmp_path}, eval_fraction=0.5))
    with caplog.at_level(logging.WARNING, logger="sslhub"):
        assert modality.skipped_files == 2
    assert "skipped 2 unreadable or empty files" in caplog.text and "broken.wav" in caplog.text
    assert modality.scan.class_names == ["cat", "dog"]
    split = modality.eval_split()
    samples = [split.train[i] for i in range(len(split.train))] + [split.test[i] for i in range(len(split.test))]
    assert len(samples) == 4
    assert all(s["waveform"].shape == (16000,) for s in samples)
    assert sorted(int(s["label"]) for s in samples) == [0, 0, 1, 1]
    by_file = {f.path.name: f for f in modality.scan.files}
    dataset = modality._dataset(list(range(4)), labeled=False)
    names = [f.path.name for f in modality.scan.files]
    stereo_wave = dataset[names.index("b.flac")]["waveform"]
    assert stereo_wave.abs().max() == pytest.approx(0.5, abs=0.02)  # mean of a full-scale and a silent channel
    assert stereo_wave[:3000].abs().max() == 0  # 0.5 s padded symmetrically to 1 s
    cropped = dataset[names.index("c.wav")]["waveform"]
    assert torch.allclose(cropped, torch.full((16000,), 0.1), atol=1e-3)  # 16-bit PCM
    assert by_file["a.wav"].sample_rate == 22050
    assert modality.fingerprint().startswith("folder(")


def test_folder_without_subfolders_has_no_eval_split(tmp_path):
    _write(tmp_path / "x.wav", np.zeros(8000) + 0.1, 16000)
    _write(tmp_path / "y.ogg", np.zeros(8000) + 0.1, 16000)
    modality = AudioModality(AudioParams(source={"type": "folder", "path": tmp_path}))
    assert modality.eval_split() is None
    assert len(modality.train_dataset()) + len(modality.held_out_dataset()) == 2


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="does not exist or is not a folder"):
        AudioModality(AudioParams(source={"type": "folder", "path": tmp_path / "missing"})).train_dataset()
    (tmp_path / "broken.wav").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"no readable audio files .* \(1 skipped as unreadable or empty\)"):
        AudioModality(AudioParams(source={"type": "folder", "path": tmp_path})).train_dataset()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"features": {"n_fft": 256, "win_length": 400}}, "win_length (400) must be <= n_fft (256)"),
        ({"sample_rate": 8000, "features": {"f_max": 6000}}, "f_max (6000.0) must be <= sample_rate / 2"),
        ({"source": {"type": "folder", "path": "x", "extensions": ["wav"]}}, "extensions must start with '.'"),
        ({"source": {"type": "youtube"}}, "does not match any of the expected tags"),
        ({"eval_fraction": 1.0}, "less than 1"),
        ({"features": {"normalise": "utterance"}}, "Extra inputs are not permitted"),
    ],
)
def test_bad_params_fail_validation_with_a_clear_message(params, message):
    with pytest.raises(ValidationError) as error:
        AudioParams(**params)
    assert message in str(error.value)


def test_raw_features_are_pooled_log_mel_statistics_that_tell_words_apart(small_audio):
    from sslhub.testing import check_raw_features

    features = torch.randn(3, 32, 51)
    raw = small_audio.raw_features({"features": features})
    assert raw.shape == (3, 64)
    assert torch.allclose(raw[:, :32], features.mean(-1)) and torch.allclose(raw[:, 32:], features.std(-1))
    check_raw_features(small_audio, max_samples=100)  # the contract; words differ in time, which pooling drops
    # A case pooled statistics must solve: low and high tones at random loudness, in noise.
    generator = torch.Generator().manual_seed(0)
    time = torch.arange(small_audio.num_samples) / 8000
    pitch = torch.tensor([300.0, 2000.0]).repeat(20)
    loudness = 0.05 + 0.5 * torch.rand(40, 1, generator=generator)
    waveform = loudness * torch.sin(2 * torch.pi * pitch[:, None] * time) + 0.01 * torch.randn(
        40, len(time), generator=generator
    )
    raw = small_audio.raw_features(small_audio.on_device({"waveform": waveform}))
    labels = (pitch > 1000).long()
    assert knn_accuracy(raw[:20], labels[:20], raw[20:], labels[20:], k=3) == 1.0


def test_a_second_build_of_the_modality_reuses_the_rendered_clips(monkeypatch: pytest.MonkeyPatch):
    # Benchmarks and the evaluation build the modality again; rendering (a few ms per clip on
    # the host) must happen once per clip, or a short run times the data maker, not training.
    params = AudioParams(source={"type": "default", "num_clips": 20, "num_classes": 4, "seed": 12345})
    first = AudioModality(params).train_dataset()
    rendered = [first[i]["waveform"] for i in range(len(first))]
    calls = []
    original = SyntheticWords.render
    monkeypatch.setattr(SyntheticWords, "render", lambda self, index: calls.append(index) or original(self, index))
    second = AudioModality(params).train_dataset()
    assert all(torch.equal(second[i]["waveform"], rendered[i]) for i in range(len(second)))
    assert calls == []
    uncached = AudioModality(params.model_copy(update={"source": params.source.model_copy(update={"cache": False})}))
    uncached.train_dataset()[0]
    assert len(calls) == 1
