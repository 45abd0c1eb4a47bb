"""Map-style datasets of fixed-length mono clips: ``{"waveform": float32 [num_samples]}``.

Labeled variants add ``"label"`` (int64 scalar). Every dataset is deterministic per index
and picklable, so DataLoader workers can decode in parallel.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import soundfile
import torch
import torchaudio
from torch.utils.data import Dataset

from sslhub import UnreadableFiles, group_split, split_by_path_groups
from sslhub_audio.features import fix_length
from sslhub_audio.synthetic import SyntheticWords

logger = logging.getLogger("sslhub")


class SyntheticWordsDataset(Dataset):
    """Clips ``indices`` of a :class:`SyntheticWords` corpus.

    Args:
        corpus: the generator.
        indices: which clips (global clip indices) this dataset holds.
        labeled: add ``"label"`` to each sample.
        cache: optional dict ``clip index -> waveform`` kept in memory (per process, shareable
            between datasets of one corpus), trading ``num_samples * 4`` bytes per clip for not
            re-rendering every epoch; ``None`` renders every time.
    """

    def __init__(
        self,
        corpus: SyntheticWords,
        indices: Sequence[int],
        labeled: bool = False,
        cache: dict[int, torch.Tensor] | None = None,
    ):
        self.corpus = corpus
        self.indices = list(indices)
        self.labeled = labeled
        self.cache = cache

    def _waveform(self, index: int) -> torch.Tensor:
        if self.cache is None:
            return torch.from_numpy(self.corpus.render(index))
        if index not in self.cache:
            self.cache[index] = torch.from_numpy(self.corpus.render(index))
        return self.cache[index]

    def __getstate__(self) -> dict:
        # Workers start with an empty cache rather than a pickled copy of the parent's.
        return {**self.__dict__, "cache": None if self.cache is None else {}}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        index = self.indices[item]
        sample = {"waveform": self._waveform(index)}
        if self.labeled:
            sample["label"] = torch.tensor(self.corpus.label(index), dtype=torch.int64)
        return sample


@dataclass(frozen=True)
class AudioFile:
    """One readable audio file found by :func:`scan_audio_folder`."""

    path: Path
    sample_rate: int
    frames: int
    label: int = -1


@dataclass
class FolderScan:
    """What :func:`scan_audio_folder` found.

    Attributes:
        files: readable, non-empty files sorted by path.
        class_names: subfolder names when every file sits in one (labels index into these).
        skipped: unreadable or empty files, ``(path, reason)``.
    """

    files: list[AudioFile]
    class_names: list[str]
    skipped: list[tuple[Path, str]]

    @property
    def labeled(self) -> bool:
        return bool(self.class_names)

    def fingerprint(self) -> str:
        digest = hashlib.sha1()
        for f in self.files:
            digest.update(f"{f.path}:{f.frames}:{f.sample_rate}\n".encode())
        return digest.hexdigest()[:12]


def scan_audio_folder(root: Path, extensions: Sequence[str]) -> FolderScan:
    """Find audio files under ``root`` and read their headers.

    Files whose header cannot be read, or that hold no samples, are skipped and reported with
    a warning on the ``sslhub`` logger naming the first few. If every file sits below a
    first-level subfolder, the subfolder names are the class labels.

    Args:
        root: folder to search recursively.
        extensions: file suffixes to include, compared case-insensitively (``.wav``).

    Raises:
        ValueError: ``root`` is not a folder, or no readable file was found.
    """
    root = Path(root).expanduser()  # validation expands ~ too; a path that validated must load
    wanted = {e.lower() for e in extensions}
    paths = list_audio_files(root, extensions)
    readable: list[tuple[Path, int, int]] = []
    skipped: list[tuple[Path, str]] = []
    for path in paths:
        try:
            info = soundfile.info(str(path))
        except Exception as error:  # soundfile raises several types for corrupt headers
            skipped.append((path, f"unreadable: {error}"))
            continue
        if info.frames <= 0 or info.samplerate <= 0:
            skipped.append((path, "empty"))
            continue
        readable.append((path, int(info.samplerate), int(info.frames)))
    if skipped:
        shown = ", ".join(f"{p.relative_to(root)} ({why})" for p, why in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        logger.warning("audio source %s: skipped %d unreadable or empty files: %s%s", root, len(skipped), shown, more)
    if not readable:
        raise ValueError(
            f"no readable audio files with extensions {sorted(wanted)} under {str(root)!r}"
            + (f" ({len(skipped)} skipped as unreadable or empty)" if skipped else "")
        )
    labels, class_names = class_labels([p.relative_to(root) for p, _, _ in readable])
    files = [
        AudioFile(path, sr, frames, labels[i] if labels is not None else -1)
        for i, (path, sr, frames) in enumerate(readable)
    ]
    return FolderScan(files=files, class_names=class_names, skipped=skipped)


def list_audio_files(root: Path, extensions: Sequence[str]) -> list[Path]:
    """Files under ``root`` (recursively) with one of ``extensions``, sorted, without reading them.

    Raises:
        ValueError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"audio source folder {str(root)!r} does not exist or is not a folder")
    wanted = {e.lower() for e in extensions}
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in wanted)


def class_labels(relative: Sequence[Path]) -> tuple[list[int] | None, list[str]]:
    """Class index per relative path from its first-level subfolder, and the sorted class names.

    ``(None, [])`` when some file lies directly in the root: the folder has no labels.
    """
    if not all(len(r.parts) > 1 for r in relative):
        return None, []
    class_names = sorted({r.parts[0] for r in relative})
    label_of = {name: i for i, name in enumerate(class_names)}
    return [label_of[r.parts[0]] for r in relative], class_names


def grouped_split(
    root: Path, scan: FolderScan, pattern: str | None, test_fraction: float, seed: int
) -> tuple[list[int], list[int], dict[str, int] | None]:
    """Train and test file indices of a labeled scan: whole groups per side when ``pattern`` is given.

    Without a pattern the split is stratified by class (every file its own group).

    Raises:
        ValueError: see :func:`sslhub.split_by_path_groups`.
    """
    relative = [f.path.relative_to(root).as_posix() for f in scan.files]
    labels = [f.label for f in scan.files] if scan.labeled else None
    if pattern is None:
        if labels is None:
            raise ValueError(f"audio source {str(root)!r} has no labels (some files lie outside class subfolders)")
        split = group_split(labels, None, test_fraction, seed)
        return split.train, split.test, None
    split = split_by_path_groups(relative, labels, scan.class_names, pattern, str(root), test_fraction, seed)
    return split.train, split.test, split.group_counts()


class AudioFileDataset(Dataset):
    """Decodes files with ``soundfile``, mixes to mono, resamples and center-crops/pads.

    Only the centred segment that survives the crop is read from disk, so long files are cheap.

    Args:
        files: the files to serve.
        sample_rate: output sample rate (resampled with ``torchaudio.functional.resample``).
        num_samples: output length in samples.
        labeled: add ``"label"`` from the file's subfolder.
    """

    def __init__(self, files: Sequence[AudioFile], sample_rate: int, num_samples: int, labeled: bool = False):
        self.files = list(files)
        self.sample_rate = sample_rate
        self.num_samples = num_samples
        self.labeled = labeled
        # Files whose header passed the scan but whose frames are corrupt fail here: skipped, named.
        self.unreadable = UnreadableFiles(len(self.files), "audio file")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        current, waveform = self.unreadable.read(item, lambda i: str(self.files[i].path), self.decode)
        sample = {"waveform": waveform}
        if self.labeled:
            sample["label"] = torch.tensor(self.files[current].label, dtype=torch.int64)
        return sample

    def decode(self, item: int) -> torch.Tensor:
        """The centred ``[num_samples]`` mono waveform of file ``item`` at ``sample_rate``."""
        file = self.files[item]
        # Read slightly more than needed at the file's own rate; fix_length trims exactly.
        wanted = int(math.ceil(self.num_samples * file.sample_rate / self.sample_rate)) + 2
        start = max(0, (file.frames - wanted) // 2)
        stop = min(file.frames, start + wanted)
        data, rate = soundfile.read(str(file.path), start=start, stop=stop, dtype="float32", always_2d=True)
        waveform = torch.from_numpy(data).mean(dim=1)
        if rate != self.sample_rate:
            waveform = torchaudio.functional.resample(waveform, rate, self.sample_rate)
        return fix_length(waveform, self.num_samples).contiguous().float()


def split_indices(count: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministically split ``range(count)`` into (train, held-out) index lists.

    At least one item lands on each side when ``count >= 2``.
    """
    if count < 2:
        raise ValueError(f"need at least 2 clips to split into train and evaluation parts, got {count}")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    held = min(count - 1, max(1, round(count * eval_fraction)))
    return sorted(order[held:]), sorted(order[:held])
