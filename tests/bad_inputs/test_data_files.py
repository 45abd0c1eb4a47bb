"""Data files that decode wrongly or not at all at read time.

A 16-bit PNG was saturated to white and RGBA was flattened without compositing; a FLAC with a
valid header and corrupt frames failed mid-run with ``LibsndfileError: Internal psf_fseek()
failed.`` naming no file; nine truncated JPEGs in a row crashed training with a RuntimeError.
Now pixels are scaled and composited on a stated background, and an unreadable file is skipped
with a warning naming it, until more than a stated share of the files failed: then the error
names them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from sslhub import SSLHubError
from sslhub.unreadable import MAX_UNREADABLE_SHARE
from sslhub_audio.datasets import AudioFileDataset, scan_audio_folder
from sslhub_vision.sources import ALPHA_BACKGROUND, FolderImageDataset


def test_16_bit_png_is_scaled_not_saturated(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    image = FolderImageDataset([tmp_path / "deep.png"], 32, 1)[0]["image"][0]
    expected = torch.from_numpy(np.round(ramp / 257.0).astype(np.uint8))
    assert (image.int() - expected.int()).abs().max() <= 1
    assert (image == 255).float().mean() < 0.01  # was 99.6% white


def test_rgba_is_composited_on_the_stated_background(tmp_path):
    pixels = np.zeros((16, 16, 4), np.uint8)
    pixels[..., :3] = (200, 0, 0)  # colour hidden under transparent pixels
    pixels[:8, :, 3] = 255  # top half opaque, bottom half transparent, column 8 half-transparent
    pixels[8:, :, 3] = 0
    pixels[:, 8, 3] = 128
    Image.fromarray(pixels, "RGBA").save(tmp_path / "alpha.png")
    image = FolderImageDataset([tmp_path / "alpha.png"], 16, 3)[0]["image"]
    assert image[:, 2, 2].tolist() == [200, 0, 0]
    assert image[:, 12, 2].tolist() == list(ALPHA_BACKGROUND)
    assert image[:, 2, 8].tolist() == [round((200 * 128 + 255 * 127) / 255), 127, 127]


def _jpegs(folder: Path, good: int, truncated: list[int]) -> list[Path]:
    paths = []
    for index in range(good):
        path = folder / f"{index:03d}.jpg"
        Image.fromarray(np.full((16, 16, 3), index % 250, np.uint8)).save(path)
        if index in truncated:
            path.write_bytes(path.read_bytes()[:150])
        paths.append(path)
    return paths


def test_nine_truncated_jpegs_in_a_row_are_skipped_and_named(tmp_path, caplog):
    paths = _jpegs(tmp_path, 100, list(range(10, 19)))
    dataset = FolderImageDataset(paths, 16, 3)
    with caplog.at_level(logging.WARNING, logger="sslhub"):
        samples = [dataset[i]["image"] for i in range(len(dataset))]
    assert len(samples) == 100
    assert samples[10][0, 0, 0].item() == 19  # the next readable file stands in
    for index in range(10, 19):
        assert f"skipping unreadable image {paths[index]}" in caplog.text


def test_too_many_unreadable_images_give_up_naming_them(tmp_path):
    paths = _jpegs(tmp_path, 40, list(range(0, 40, 3)))  # 14 of 40: above the 10% skipped
    dataset = FolderImageDataset(paths, 16, 3)
    with pytest.raises(SSLHubError) as info:
        for index in range(len(dataset)):
            dataset[index]
    message = str(info.value)
    assert f"of 40 images failed to decode, more than the {MAX_UNREADABLE_SHARE:.0%} that training skips" in message
    assert str(paths[0]) in message and str(paths[3]) in message


def _flac_with_corrupt_frames(path: Path) -> None:
    noise = (np.random.default_rng(0).standard_normal(32000) * 0.1).astype(np.float32)
    soundfile.write(path, noise, 16000)
    data = bytearray(path.read_bytes())
    for index in range(200, len(data)):  # keep the header (STREAMINFO), garble every frame
        data[index] = (data[index] * 7 + 13) & 0xFF
    path.write_bytes(bytes(data))


def test_flac_with_corrupt_frames_is_skipped_and_named(tmp_path, caplog):
    folder = tmp_path / "clips" / "word"
    folder.mkdir(parents=True)
    for index in range(12):
        soundfile.write(folder / f"{index:02d}.wav", np.full(16000, index / 100, np.float32), 16000)
    _flac_with_corrupt_frames(folder / "00_corrupt.flac")
    scan = scan_audio_folder(tmp_path / "clips", [".wav", ".flac"])
    files = scan.files
    assert any(f.path.name == "00_corrupt.flac" for f in files), "the header is valid, so the scan keeps it"
    dataset = AudioFileDataset(files, 16000, 8000)
    with caplog.at_level(logging.WARNING, logger="sslhub"):
        waveforms = [dataset[i]["waveform"] for i in range(len(dataset))]
    assert len(waveforms) == 13 and all(torch.isfinite(w).all() for w in waveforms)
    assert f"skipping unreadable audio file {folder / '00_corrupt.flac'}" in caplog.text
    assert "psf_fseek" in caplog.text  # the decoder's reason, now beside the file's name


def test_audio_folder_under_home_written_with_a_tilde_loads(tmp_path, monkeypatch):
    # validate expanded ~ but loading did not: the recipe passed validate, then failed to train
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / "clips" / "word"
    folder.mkdir(parents=True)
    soundfile.write(folder / "one.wav", np.zeros(8000, np.float32), 16000)
    scan = scan_audio_folder(Path("~/clips"), [".wav"])
    assert [f.path for f in scan.files] == [folder / "one.wav"]
