"""Spoken digit words ("zero".."nine") synthesized by espeak-ng in many voices.

A group is one espeak-ng voice variant (``+m3``, ``+klatt2``, ``+Annie``...: its own timbre,
formants and pitch range), the closest thing a synthesizer has to a speaker. Each clip of a
voice gets a random English accent (British, American, Scottish, Caribbean...), pitch and
speed, is trimmed of leading and trailing silence, resampled to 16 kHz and written as 16-bit
FLAC under ``<side>/<word>/<voice>__<n>.flac``.
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from groups import FOLDER_GROUP_PATTERN, describe_sides, sample_file_name, slug, split_groups
from scipy.signal import resample_poly

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

#: espeak-ng's English accents (the ``gmw/`` voices; the mbrola ones need extra packages).
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")

SAMPLE_RATE = 16000
INSTALL_HINT = "install it with: apt-get install -y espeak-ng (Debian/Ubuntu)"


class MissingTool(RuntimeError):
    """A program the builder needs is not installed; the message says how to install it."""


def espeak_binary() -> str:
    """Path of ``espeak-ng``.

    Raises:
        MissingTool: it is not on ``PATH``.
    """
    path = shutil.which("espeak-ng")
    if path is None:
        raise MissingTool(
            f"the audio set needs the espeak-ng speech synthesizer, which is not installed; {INSTALL_HINT}"
        )
    return path


def list_variants(binary: str) -> list[str]:
    """Names of the voice variants espeak-ng knows (``--voices=variant``), sorted."""
    listing = subprocess.run([binary, "--voices=variant"], capture_output=True, text=True, check=True).stdout
    names = set()
    for line in listing.splitlines()[1:]:
        # the last column, File, is "!v/<name>"; a name with a space cannot be given after "+"
        name = line.partition("!v/")[2].strip()
        if name and not any(c.isspace() for c in name):
            names.add(name)
    if not names:
        raise MissingTool(f"espeak-ng lists no voice variants (is espeak-ng-data complete?); {INSTALL_HINT}")
    return sorted(names)


@dataclass(frozen=True)
class Clip:
    """One utterance to synthesize."""

    word: str
    variant: str
    accent: str
    pitch: int
    speed: int
    number: int

    @property
    def group(self) -> str:
        return slug(self.variant)


def plan_clips(variants: list[str], clips_per_word: int, seed: int) -> list[Clip]:
    """Every (variant, word, repeat) with a seeded random accent, pitch (0-99) and speed (wpm)."""
    clips = []
    for variant in variants:
        rng = random.Random(f"{seed}:{variant}")
        base_pitch = rng.randint(25, 75)  # a voice keeps its own pitch range, like a speaker
        for word in WORDS:
            for repeat in range(clips_per_word):
                clips.append(
                    Clip(
                        word=word,
                        variant=variant,
                        accent=rng.choice(ACCENTS),
                        pitch=min(99, max(0, base_pitch + rng.randint(-15, 15))),
                        speed=rng.randint(130, 210),
                        number=repeat,
                    )
                )
    return clips


def trim_silence(waveform: np.ndarray, rate: int, threshold: float = 0.02, margin_s: float = 0.02) -> np.ndarray:
    """Cut leading and trailing samples quieter than ``threshold`` x the peak, keeping a small margin."""
    peak = float(np.abs(waveform).max()) if waveform.size else 0.0
    if peak == 0.0:
        return waveform
    loud = np.flatnonzero(np.abs(waveform) >= threshold * peak)
    margin = int(margin_s * rate)
    return waveform[max(0, loud[0] - margin) : loud[-1] + 1 + margin]


def synthesize(binary: str, clip: Clip) -> np.ndarray:
    """float32 mono waveform at :data:`SAMPLE_RATE`, trimmed and peak-normalised to 0.9."""
    voice = f"{clip.accent}+{clip.variant}"
    command = [binary, "-v", voice, "-p", str(clip.pitch), "-s", str(clip.speed), "--stdout", clip.word]
    result = subprocess.run(command, capture_output=True, check=True)
    data, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32", always_2d=True)
    waveform = trim_silence(data.mean(axis=1), rate)
    if rate != SAMPLE_RATE:
        divisor = np.gcd(SAMPLE_RATE, rate)
        waveform = resample_poly(waveform, SAMPLE_RATE // divisor, rate // divisor).astype(np.float32)
    peak = float(np.abs(waveform).max())
    if peak == 0.0:
        raise RuntimeError(f"espeak-ng produced silence for {' '.join(command)}")
    return (waveform * (0.9 / peak)).astype(np.float32)


def build_audio(out: Path, clips_per_word: int, labeled_fraction: float, seed: int, max_voices: int | None) -> dict:
    """Write the audio set under ``out`` (``pretrain/`` and ``labeled/``) and return its manifest entry.

    Args:
        out: folder for this modality (created).
        clips_per_word: clips of each word per voice.
        labeled_fraction: share of voices held out on the labeled side.
        seed: seed of the voice split and the per-clip accent, pitch and speed.
        max_voices: use only the first N voice variants (tests); None for all.
    """
    binary = espeak_binary()
    variants = list_variants(binary)
    if max_voices is not None:
        variants = variants[:max_voices]
    pretrain, labeled = split_groups((slug(v) for v in variants), labeled_fraction, seed)
    side_of = {**dict.fromkeys(pretrain, "pretrain"), **dict.fromkeys(labeled, "labeled")}
    clips = plan_clips(variants, clips_per_word, seed)

    def write(clip: Clip) -> tuple[str, str, str]:
        side = side_of[clip.group]
        target = out / side / clip.word / sample_file_name(clip.group, clip.number, "flac")
        target.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(target), synthesize(binary, clip), SAMPLE_RATE, subtype="PCM_16")
        return side, clip.word, clip.group

    with ThreadPoolExecutor(max_workers=4) as pool:  # each clip is its own espeak-ng process
        records = list(pool.map(write, clips))
    return {
        "classes": list(WORDS),
        "group": "espeak-ng voice variant",
        "sample_rate": SAMPLE_RATE,
        "layout": "<side>/<word>/<voice>__<n>.flac",
        "group_pattern": FOLDER_GROUP_PATTERN,
        "sides": describe_sides(records),
        "voices": {"pretrain": pretrain, "labeled": labeled},
    }
