"""Batched audio augmentations: shapes, identity at zero strength, per-sample randomness, statistics."""

from __future__ import annotations

import math

import pytest
import torch

from sslhub import BuildContext
from sslhub_audio.augmentations.gain import RandomGain, RandomGainParams
from sslhub_audio.augmentations.noise import AdditiveNoise, AdditiveNoiseParams, add_noise_at_snr
from sslhub_audio.augmentations.spec_augment import FrequencyMask, SpecMaskParams, TimeMask, band_masks
from sslhub_audio.augmentations.time_shift import TimeShift, TimeShiftParams, roll_rows
from sslhub_audio.modality import AudioModality, AudioParams


@pytest.fixture
def batch(small_audio):
    dataset = small_audio.train_dataset()
    return small_audio.on_device(small_audio.collate([dataset[i] for i in range(8)]))


def _all_augmentations(context):
    return [
        TimeMask(SpecMaskParams(), context),
        FrequencyMask(SpecMaskParams(), context),
        RandomGain(RandomGainParams(), context),
        AdditiveNoise(AdditiveNoiseParams(p=1.0), context),
        TimeShift(TimeShiftParams(), context),
    ]


def test_shapes_are_kept_and_inputs_are_not_mutated(batch, audio_context):
    for augmentation in _all_augmentations(audio_context):
        before = {k: v.clone() for k, v in batch.items()}
        out = augmentation(batch)
        assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in batch.items()}
        assert all(torch.equal(before[k], batch[k]) for k in batch), type(augmentation).__name__
        assert not torch.equal(out["features"], batch["features"]), type(augmentation).__name__


@pytest.mark.parametrize(
    "make",
    [
        lambda c: TimeMask(SpecMaskParams(max_width=0), c),
        lambda c: FrequencyMask(SpecMaskParams(count=0), c),
        lambda c: TimeMask(SpecMaskParams(p=0.0), c),
        lambda c: RandomGain(RandomGainParams(min_db=0.0, max_db=0.0), c),
        lambda c: AdditiveNoise(AdditiveNoiseParams(p=0.0), c),
        lambda c: TimeShift(TimeShiftParams(max_shift=0.0), c),
    ],
)
def test_zero_strength_is_the_identity(make, batch, audio_context):
    out = make(audio_context)(batch)
    for key in batch:
        torch.testing.assert_close(out[key], batch[key], atol=1e-5, rtol=1e-5)


def test_time_mask_differs_per_sample_and_fills_with_the_clip_mean(batch, audio_context):
    out = TimeMask(SpecMaskParams(max_width=10, count=2), audio_context)(batch)
    masked = (out["features"] != batch["features"]).all(dim=1)  # [B, frames]: whole frames are replaced
    assert len({tuple(row.tolist()) for row in masked}) > 1
    changed = out["features"] != batch["features"]
    assert torch.equal(changed.any(dim=1), masked)
    means = batch["features"].mean(dim=(1, 2))
    for i in range(len(means)):
        if masked[i].any():
            assert torch.allclose(out["features"][i][:, masked[i]], means[i])


def test_frequency_mask_blanks_whole_mel_bands(batch, audio_context):
    out = FrequencyMask(SpecMaskParams(max_width=8, count=1), audio_context)(batch)
    changed = out["features"] != batch["features"]
    rows = changed.any(dim=2)  # [B, n_mels]
    assert torch.equal(changed, rows[:, :, None].expand_as(changed))


def test_band_mask_fraction_matches_its_expectation():
    torch.manual_seed(0)
    length, max_width = 100, 20
    one = band_masks(20000, length, count=1, max_width=max_width, p=1.0, device=torch.device("cpu"))
    # width ~ U{0..20}: mean 10 frames of 100
    assert one.float().mean().item() == pytest.approx(0.10, abs=0.004)
    half = band_masks(20000, length, count=1, max_width=max_width, p=0.5, device=torch.device("cpu"))
    assert half.float().mean().item() == pytest.approx(0.05, abs=0.003)
    widths = one.sum(dim=1)
    assert widths.max() == max_width and widths.min() == 0


def test_random_gain_shifts_unnormalised_log_mel_by_the_gain():
    modality = AudioModality(
        AudioParams(
            source={"type": "default", "num_clips": 20, "num_classes": 2},
            sample_rate=8000,
            duration=0.25,
            features={"n_mels": 16, "n_fft": 256, "hop_length": 80, "normalize": "none"},
        )
    )
    context = BuildContext(modality=modality)
    torch.manual_seed(0)
    waveform = 0.3 * torch.randn(6, 2000)  # loud white noise: the log floor plays no part
    batch = modality.on_device({"waveform": waveform})
    out = RandomGain(RandomGainParams(min_db=-10, max_db=10), context)(batch)
    ratio = out["waveform"][:, 0] / waveform[:, 0]
    gain_db = 20 * torch.log10(ratio)
    assert gain_db.abs().max() <= 10 and gain_db.std() > 1  # per-sample gains
    shift = out["features"] - batch["features"]
    expected = gain_db * math.log(10) / 10  # power gain in natural-log units
    torch.testing.assert_close(shift, expected[:, None, None].expand_as(shift), atol=1e-3, rtol=1e-3)


def test_add_noise_at_snr_hits_the_requested_ratio():
    torch.manual_seed(0)
    signal, noise = torch.randn(4, 16000), 3.0 * torch.randn(4, 16000)
    snr = torch.tensor([0.0, 5.0, 10.0, 20.0])
    mixed = add_noise_at_snr(signal, noise, snr)
    added = mixed - signal
    measured = 10 * torch.log10(signal.pow(2).mean(1) / added.pow(2).mean(1))
    torch.testing.assert_close(measured, snr, atol=1e-3, rtol=0)
    assert torch.equal(add_noise_at_snr(signal, noise, torch.full((4,), float("inf"))), signal)


def test_additive_noise_recomputes_features_from_the_noisy_waveform(batch, small_audio, audio_context):
    torch.manual_seed(1)
    out = AdditiveNoise(AdditiveNoiseParams(min_snr_db=0, max_snr_db=10, p=1.0), audio_context)(batch)
    assert not torch.equal(out["waveform"], batch["waveform"])
    torch.testing.assert_close(out["features"], small_audio.featurize(out["waveform"]))


def test_roll_rows_is_torch_roll_per_row():
    x = torch.arange(24.0).reshape(2, 3, 4)
    shifts = torch.tensor([1, -2])
    out = roll_rows(x, shifts)
    assert torch.equal(out[0], torch.roll(x[0], 1, dims=-1))
    assert torch.equal(out[1], torch.roll(x[1], -2, dims=-1))


def test_time_shift_keeps_waveform_and_features_aligned(batch, small_audio, audio_context):
    torch.manual_seed(2)
    out = TimeShift(TimeShiftParams(max_shift=0.1), audio_context)(batch)
    recomputed = small_audio.featurize(out["waveform"])
    # Away from the wrap-around point the rolled features are the features of the rolled audio
    # (up to the per-utterance normalisation, which the roll barely changes).
    diff = (recomputed - out["features"]).abs().mean(dim=1)  # [B, frames]
    assert diff.median() < 0.05
    shifts = [(torch.roll(batch["waveform"][i], s) == out["waveform"][i]).all() for i in range(8) for s in [0]]
    assert not all(shifts)  # some samples moved


def test_waveform_augmentations_need_the_audio_modality():
    with pytest.raises(ValueError, match="needs the audio modality"):
        RandomGain(RandomGainParams(), BuildContext())
    with pytest.raises(ValueError, match="min_db"):
        RandomGainParams(min_db=3, max_db=-3)
