"""Embedded default data: synthetic spoken "words" rendered deterministically per index.

No real speech ships offline with the installed packages (only codec test files inside
scipy), so the default source synthesises clips with structure worth learning:

* an inventory of 8 "syllables": voiced harmonic stacks with a pitch contour (flat, rising,
  falling, rise-fall) shaped by two formant-like spectral peaks, and fricative-like noise
  bursts in a fixed band;
* ``num_classes`` "words", each a sequence of 2-4 syllables. Half of the words are the
  reversal of the other half, so the same syllables occur in both and a bag-of-frames
  (time-averaged spectrum) cannot tell them apart: the order has to be represented;
* per clip random pitch shift, formant shift, tempo, onset, syllable lengths and loudness,
  overall amplitude, and background noise at 10-30 dB SNR.

Each clip is generated from ``numpy.random.default_rng([seed, index])``, so nothing is stored
and every index always yields the same waveform. The label of clip ``index`` is
``index % num_classes`` (balanced classes).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

#: (kind, pitch contour in Hz as control points, formant centres in Hz or noise band (low, high)).
SYLLABLES: tuple[tuple[str, tuple[float, ...], tuple[float, float]], ...] = (
    ("voiced", (120.0, 120.0), (700.0, 1200.0)),  # flat, open vowel
    ("voiced", (140.0, 230.0), (300.0, 2300.0)),  # rising, front vowel
    ("voiced", (230.0, 130.0), (350.0, 800.0)),  # falling, back vowel
    ("voiced", (165.0, 165.0), (500.0, 1800.0)),  # flat, mid vowel
    ("noise", (), (4000.0, 6500.0)),  # "s"-like
    ("noise", (), (1800.0, 3000.0)),  # "sh"-like
    ("voiced", (130.0, 210.0, 130.0), (600.0, 1000.0)),  # rise-fall
    ("voiced", (100.0, 300.0), (450.0, 1500.0)),  # steep chirp
)


@functools.lru_cache(maxsize=16)
def word_inventory(num_classes: int, seed: int) -> tuple[tuple[int, ...], ...]:
    """The syllable sequence of each word class.

    Words come in (sequence, reversed sequence) pairs so that order carries the class.

    Args:
        num_classes: number of words (>= 2).
        seed: data seed.

    Returns:
        ``num_classes`` distinct tuples of syllable indices.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    rng = np.random.default_rng([seed, 104729])
    words: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    attempts = 0
    while len(words) < num_classes:
        attempts += 1
        if attempts > 100_000:
            raise ValueError(f"cannot make {num_classes} distinct words; use fewer classes")
        length = int(rng.integers(2, 5))
        word = tuple(int(s) for s in rng.choice(len(SYLLABLES), size=length, replace=False))
        reverse = word[::-1]
        if word in seen or reverse in seen:
            continue
        for candidate in (word, reverse):
            if len(words) < num_classes:
                words.append(candidate)
                seen.add(candidate)
    return tuple(words)


def _fade(signal: np.ndarray, sample_rate: int, seconds: float) -> np.ndarray:
    n = min(len(signal) // 2, int(seconds * sample_rate))
    if n > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))
        signal[:n] *= ramp
        signal[-n:] *= ramp[::-1]
    return signal


def _voiced(
    rng: np.random.Generator,
    num_samples: int,
    sample_rate: int,
    contour: tuple[float, ...],
    formants: tuple[float, float],
) -> np.ndarray:
    points = np.linspace(0.0, 1.0, len(contour))
    time = np.linspace(0.0, 1.0, num_samples)
    f0 = np.interp(time, points, np.asarray(contour))
    phase = 2.0 * np.pi * np.cumsum(f0) / sample_rate + rng.uniform(0.0, 2.0 * np.pi)
    num_harmonics = max(1, min(40, int(0.45 * sample_rate / f0.max())))
    # The spectral envelope changes slowly: evaluate it on a coarse time grid and interpolate.
    coarse = np.linspace(0.0, 1.0, max(2, num_samples // 64))
    coarse_f0 = np.interp(coarse, points, np.asarray(contour))
    frequencies = np.arange(1, num_harmonics + 1)[:, None] * coarse_f0[None, :]
    envelope = (
        np.exp(-0.5 * ((frequencies - formants[0]) / 120.0) ** 2)
        + 0.7 * np.exp(-0.5 * ((frequencies - formants[1]) / 180.0) ** 2)
        + 0.02
    )
    # sin(h*phase) by the Chebyshev recurrence: sin(h x) = 2 cos(x) sin((h-1) x) - sin((h-2) x),
    # a few multiply-adds per harmonic instead of a transcendental call per sample.
    twice_cos = 2.0 * np.cos(phase)
    previous, current = np.zeros(num_samples), np.sin(phase)
    signal = np.zeros(num_samples)
    for harmonic in range(num_harmonics):
        signal += np.interp(time, coarse, envelope[harmonic]) * current
        previous, current = current, twice_cos * current - previous
    return signal


def _noise(rng: np.random.Generator, num_samples: int, sample_rate: int, band: tuple[float, float]) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    frequencies = np.fft.rfftfreq(num_samples, d=1.0 / sample_rate)
    centre, width = (band[0] + band[1]) / 2.0, (band[1] - band[0]) / 2.0
    spectrum *= np.exp(-0.5 * ((frequencies - centre) / width) ** 2)
    return np.fft.irfft(spectrum, n=num_samples)


@dataclass(frozen=True)
class SyntheticWords:
    """Renders clip ``index`` of the synthetic word corpus.

    Attributes:
        num_classes: number of word classes.
        sample_rate: output sample rate in Hz.
        num_samples: clip length in samples.
        seed: data seed (changes the word inventory and every clip).
    """

    num_classes: int = 10
    sample_rate: int = 16000
    num_samples: int = 16000
    seed: int = 0

    def label(self, index: int) -> int:
        return index % self.num_classes

    def render(self, index: int) -> np.ndarray:
        """The waveform of clip ``index``: ``[num_samples]`` float32 in [-1, 1]."""
        rng = np.random.default_rng([self.seed, index])
        word = word_inventory(self.num_classes, self.seed)[self.label(index)]
        sr, total = self.sample_rate, self.num_samples
        pitch = float(np.exp(rng.uniform(-0.15, 0.15)))
        formant_shift = float(np.exp(rng.uniform(-0.08, 0.08)))
        word_length = int(rng.uniform(0.45, 0.75) * total)
        onset = int(rng.uniform(0.0, 1.0) * (total - word_length))
        proportions = rng.uniform(0.8, 1.2, size=len(word))
        lengths = np.floor(proportions / proportions.sum() * word_length).astype(int)
        clip = np.zeros(total)
        position = onset
        for syllable, length in zip(word, lengths, strict=True):
            kind, contour, shape = SYLLABLES[syllable]
            gap = int(rng.uniform(0.0, 0.02) * sr)
            length = max(16, int(length) - gap)
            if kind == "voiced":
                piece = _voiced(
                    rng,
                    length,
                    sr,
                    tuple(c * pitch for c in contour),
                    (shape[0] * formant_shift, shape[1] * formant_shift),
                )
            else:
                band = (min(shape[0] * formant_shift, 0.45 * sr), min(shape[1] * formant_shift, 0.48 * sr))
                piece = _noise(rng, length, sr, band)
            piece = piece / (np.sqrt(np.mean(piece**2)) + 1e-8) * rng.uniform(0.6, 1.0)
            piece = _fade(piece, sr, 0.01)
            end = min(total, position + length)
            clip[position:end] += piece[: end - position]
            position = end + gap
        amplitude = float(np.exp(rng.uniform(np.log(0.05), np.log(0.3))))
        clip *= amplitude
        rms = np.sqrt(np.mean(clip[onset : onset + word_length] ** 2)) + 1e-8
        snr_db = rng.uniform(10.0, 30.0)
        clip += rng.standard_normal(total) * rms / (10.0 ** (snr_db / 20.0))
        return np.clip(clip, -1.0, 1.0).astype(np.float32)
