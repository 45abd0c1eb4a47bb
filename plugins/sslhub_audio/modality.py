"""The ``audio`` modality: fixed-length mono clips, log-mel features computed on the device.

Per sample (CPU workers): decode -> mono mixdown -> resample to ``sample_rate`` -> center
crop / symmetric zero-pad to ``duration`` seconds. Samples are ``{"waveform": float32 [T]}``.

Per batch (device, :meth:`AudioModality.on_device`): ``features = log-mel(waveform)``,
``[B, n_mels, frames]`` with ``frames = T // hop_length + 1``, normalised per utterance.
The waveform is kept in the batch for waveform encoders and waveform augmentations.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor
from torch.utils.data import Dataset

from sslhub import (
    BuildContext,
    EvalSplit,
    ExportFrontend,
    GroupPattern,
    Modality,
    ModalityInfo,
    Params,
    path_group_problems,
    path_problems,
)
from sslhub_audio.datasets import (
    AudioFileDataset,
    FolderScan,
    SyntheticWordsDataset,
    class_labels,
    grouped_split,
    list_audio_files,
    scan_audio_folder,
    split_indices,
)
from sslhub_audio.features import LogMelFeatures
from sslhub_audio.synthetic import SyntheticWords

logger = logging.getLogger("sslhub")

#: Rendered clips per corpus, shared by every modality in the process (a clip depends only on
#: its corpus and index). A run builds the modality more than once (training, the evaluation's
#: baselines), and a benchmark once per round: each clip is rendered once, not once per build.
#: Rendering costs a few ms per clip on the host, so an uncached first epoch is paced by it.
#: Only the most recently used corpora are kept (a dataset still holding an older one keeps it).
_RENDERED_CLIPS: OrderedDict[SyntheticWords, dict[int, Tensor]] = OrderedDict()
#: corpora kept in ``_RENDERED_CLIPS``: 128 MB each at the defaults
RENDERED_CORPORA_KEPT = 2


def rendered_clips(corpus: SyntheticWords) -> dict[int, Tensor]:
    """The process-wide clip cache of ``corpus`` (made empty on first use; the least recently used beyond the bound dropped)."""
    cache = _RENDERED_CLIPS.pop(corpus, None)
    _RENDERED_CLIPS[corpus] = {} if cache is None else cache
    while len(_RENDERED_CLIPS) > RENDERED_CORPORA_KEPT:
        _RENDERED_CLIPS.popitem(last=False)
    return _RENDERED_CLIPS[corpus]


class DefaultAudioSource(Params):
    """Embedded synthetic spoken-word clips (see :mod:`sslhub_audio.synthetic`)."""

    type: Literal["default"] = "default"
    num_clips: int = Field(2000, ge=10, description="Number of clips generated (train + evaluation).")
    num_classes: int = Field(10, ge=2, le=40, description="Number of word classes (labels for evaluation).")
    seed: int = Field(0, description="Data seed: changes the word inventory and every clip.")
    cache: bool = Field(
        True,
        description="Keep rendered clips in memory (num_clips * samples * 4 bytes, 128 MB at the defaults) "
        "instead of re-rendering them every epoch.",
    )


class FolderAudioSource(Params):
    """Audio files under a folder; first-level subfolder names are class labels."""

    type: Literal["folder"] = "folder"
    path: Path = Field(description="Folder searched recursively for audio files.")
    extensions: list[str] = Field(
        default_factory=lambda: [".wav", ".flac", ".ogg"],
        description="File suffixes read with soundfile (case-insensitive).",
    )

    group_pattern: GroupPattern = Field(
        None,
        description="Regex over each file's path relative to path; its (?P<group>...) (or first group) names the "
        "file's group (a speaker): the evaluation split keeps groups apart, test groups unseen.",
    )

    def file_problems(
        self, test_fraction: float | None = None, seed: int = 0, min_train_per_class: int = 1
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """A missing or soundless folder; a group pattern leaving a file without a group; a class without probe-train samples."""
        missing = path_problems(self.path, "folder", self.extensions)
        if missing or self.group_pattern is None or test_fraction is None:
            return missing
        root = self.path.expanduser()  # path_problems found a folder there
        relative = [p.relative_to(root) for p in list_audio_files(root, self.extensions)]
        labels, class_names = class_labels(relative)
        posix = [r.as_posix() for r in relative]
        return path_group_problems(
            posix,
            labels,
            class_names,
            self.group_pattern,
            str(root),
            test_fraction,
            seed,
            min_train_per_class=min_train_per_class,
        )

    @field_validator("extensions")
    @classmethod
    def _dotted(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("extensions must list at least one suffix such as '.wav'")
        bad = [e for e in value if not e.startswith(".")]
        if bad:
            raise ValueError(f"extensions must start with '.', got {bad}")
        return value


class LogMelParams(Params):
    """Log-mel front end computed on the device."""

    n_mels: int = Field(64, gt=0, description="Mel bands.")
    n_fft: int = Field(400, gt=0, description="FFT size in samples (400 = 25 ms at 16 kHz).")
    hop_length: int = Field(160, gt=0, description="Samples between frames (160 = 10 ms at 16 kHz).")
    win_length: int | None = Field(None, gt=0, description="Hann window length; None means n_fft.")
    f_min: float = Field(0.0, ge=0, description="Lowest mel band edge in Hz.")
    f_max: float | None = Field(None, gt=0, description="Highest mel band edge in Hz; None means sample_rate / 2.")
    normalize: Literal["utterance", "none"] = Field(
        "utterance", description="'utterance': standardise each clip's log-mel by its own mean and std."
    )

    @model_validator(mode="after")
    def _window_fits(self) -> LogMelParams:
        if self.win_length is not None and self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        return self


class AudioParams(Params):
    """Parameters of the ``audio`` modality (the recipe's ``data:`` section)."""

    source: Annotated[DefaultAudioSource | FolderAudioSource, Field(discriminator="type")] = Field(
        default_factory=DefaultAudioSource,
        description="Where clips come from: {type: default} or {type: folder, path}.",
    )
    sample_rate: int = Field(16000, ge=1000, description="Sample rate in Hz every clip is resampled to.")
    duration: float = Field(
        1.0, gt=0, description="Clip length in seconds: longer clips are center-cropped, shorter ones zero-padded."
    )
    features: LogMelParams = Field(default_factory=LogMelParams, description="Log-mel feature settings.")
    eval_fraction: float = Field(
        0.2, gt=0, lt=1, description="Fraction of clips held out for evaluation (kNN/probe test set, held-out metrics)."
    )
    split_seed: int = Field(0, description="Seed of the deterministic train / evaluation split.")

    def file_problems(
        self, test_fraction: float | None = None, seed: int = 0, min_train_per_class: int = 1
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """The source's problems with this recipe's ``eval_fraction`` and ``split_seed``."""
        problems = self.source.file_problems(self.eval_fraction, self.split_seed, min_train_per_class)
        return [(("source", *path), message) for path, message in problems]

    @model_validator(mode="after")
    def _consistent(self) -> AudioParams:
        f = self.features
        if f.f_max is not None and f.f_max > self.sample_rate / 2:
            raise ValueError(f"features.f_max ({f.f_max}) must be <= sample_rate / 2 ({self.sample_rate / 2})")
        if round(self.duration * self.sample_rate) < (f.win_length or f.n_fft):
            raise ValueError(f"duration ({self.duration} s) is shorter than one analysis window")
        return self


class AudioModality(Modality):
    """Fixed-length mono audio; the encoder input is a log-mel spectrogram ``[B, n_mels, frames]``."""

    input_names = ("features",)

    def __init__(self, params: AudioParams, context: BuildContext | None = None):
        self.params = params
        self.num_samples = int(round(params.duration * params.sample_rate))
        f = params.features
        self.featurizer = LogMelFeatures(
            sample_rate=params.sample_rate,
            n_fft=f.n_fft,
            hop_length=f.hop_length,
            win_length=f.win_length or f.n_fft,
            n_mels=f.n_mels,
            f_min=f.f_min,
            f_max=f.f_max,
            normalize=f.normalize,
        )
        self.num_frames = self.featurizer.num_frames(self.num_samples)
        self._scan: FolderScan | None = None
        self._splits: tuple[list[int], list[int]] | None = None
        self._groups: dict[str, int] | None = None

    # -- data ---------------------------------------------------------------------------------

    @property
    def scan(self) -> FolderScan | None:
        """Files found for a folder source (scanned once, on first use); ``None`` for the default source."""
        source = self.params.source
        if isinstance(source, FolderAudioSource) and self._scan is None:
            self._scan = scan_audio_folder(source.path, source.extensions)
        return self._scan

    @property
    def skipped_files(self) -> int:
        """How many unreadable or empty files the folder scan skipped."""
        return len(self.scan.skipped) if self.scan is not None else 0

    def _split(self) -> tuple[list[int], list[int]]:
        if self._splits is None:
            source = self.params.source
            fraction, seed = self.params.eval_fraction, self.params.split_seed
            if isinstance(source, FolderAudioSource) and source.group_pattern is not None:
                train, test, self._groups = grouped_split(source.path, self.scan, source.group_pattern, fraction, seed)
                self._splits = (train, test)
            else:
                count = source.num_clips if isinstance(source, DefaultAudioSource) else len(self.scan.files)
                self._splits = split_indices(count, fraction, seed)
        return self._splits

    def _dataset(self, indices: list[int], labeled: bool, scan: FolderScan | None = None) -> Dataset:
        source = self.params.source
        if isinstance(source, DefaultAudioSource) and scan is None:
            corpus = SyntheticWords(source.num_classes, self.params.sample_rate, self.num_samples, source.seed)
            return SyntheticWordsDataset(
                corpus, indices, labeled=labeled, cache=rendered_clips(corpus) if source.cache else None
            )
        files = [(scan or self.scan).files[i] for i in indices]
        return AudioFileDataset(files, self.params.sample_rate, self.num_samples, labeled=labeled)

    def train_dataset(self) -> Dataset:
        return self._dataset(self._split()[0], labeled=False)

    def held_out_dataset(self) -> Dataset | None:
        return self._dataset(self._split()[1], labeled=False)

    def eval_split(self) -> EvalSplit | None:
        source = self.params.source
        if isinstance(source, DefaultAudioSource):
            class_names = [f"word_{i}" for i in range(source.num_classes)]
        elif self.scan.labeled:
            class_names = self.scan.class_names
        else:
            return None
        train, test = self._split()
        return EvalSplit(
            train=self._dataset(train, labeled=True),
            test=self._dataset(test, labeled=True),
            class_names=class_names,
            groups=self._groups,
        )

    def labeled_split(self, source: Params, test_fraction: float, seed: int) -> EvalSplit:
        """A labeled audio folder decoded like the training clips; grouped when it has a ``group_pattern``."""
        if not isinstance(source, FolderAudioSource):
            raise ValueError("an audio evaluation source must be a folder of class subfolders")
        scan = scan_audio_folder(source.path, source.extensions)
        train, test, groups = grouped_split(source.path, scan, source.group_pattern, test_fraction, seed)
        return EvalSplit(
            train=self._dataset(train, labeled=True, scan=scan),
            test=self._dataset(test, labeled=True, scan=scan),
            class_names=scan.class_names,
            groups=groups,
            source=str(source.path),
        )

    def labeled_source(self, path: Path, label: str | None = None, group: str | None = None) -> dict[str, Any]:
        """A folder of class subfolders; ``group`` is a group pattern over the relative paths."""
        if label is not None:
            raise ValueError("audio folders take labels from their class subfolders; --label does not apply")
        if not path.is_dir():
            raise ValueError(f"{path}: an audio evaluation source is a folder of class subfolders")
        return {"type": "folder", "path": str(path), "group_pattern": group}

    # -- device side --------------------------------------------------------------------------

    def featurize(self, waveform: Tensor) -> Tensor:
        """Log-mel features of a waveform batch on its own device.

        Args:
            waveform: ``[B, T]`` float.

        Returns:
            ``[B, n_mels, T // hop_length + 1]`` float32.
        """
        if self.featurizer.mel.spectrogram.window.device != waveform.device:
            # Keep the filter bank and window resident on the batch's device after the first call.
            self.featurizer = self.featurizer.to(waveform.device)
        return self.featurizer(waveform)

    def on_device(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {**batch, "features": self.featurize(batch["waveform"])}

    def raw_features(self, batch: dict[str, Tensor]) -> Tensor:
        """The raw-input baseline: each mel band's mean and standard deviation over time.

        Args:
            batch: ``{"features": float [B, n_mels, frames]}`` (after :meth:`on_device`).

        Returns:
            float32 ``[B, 2 * n_mels]``: the means, then the standard deviations.
        """
        features = batch["features"].float()
        return torch.cat([features.mean(dim=-1), features.std(dim=-1)], dim=1)

    def augmentation_samples(self, batch: dict[str, Tensor], views: list[dict[str, Tensor]]) -> dict[str, Tensor | str]:
        """``{"spectrograms": uint8 [H, W]}``: one row per clip, its log-mel then each view's, low bands at the bottom.

        Args:
            batch: ``{"features": float [n, n_mels, frames]}``; views: the same, augmented.
        """
        rows = []
        for index in range(batch["features"].shape[0]):
            original = batch["features"][index].float()
            low, high = original.min(), original.max()
            tiles = [original] + [view["features"][index].float() for view in views if "features" in view]
            scaled = [((t - low) / (high - low).clamp_min(1e-6)).clamp(0, 1).flip(0) for t in tiles]
            rows.append(torch.cat([torch.nn.functional.pad(t, (2, 2, 2, 2), value=1.0) for t in scaled], dim=-1))
        grid = torch.cat(rows, dim=0).repeat_interleave(2, dim=0).repeat_interleave(2, dim=1)
        return {"spectrograms": (grid * 255).round().to(torch.uint8).cpu()}

    def example_batch(self, batch_size: int, device: torch.device | str = "cpu") -> dict[str, Tensor]:
        generator = torch.Generator().manual_seed(0)
        waveform = 0.1 * torch.randn(batch_size, self.num_samples, generator=generator)
        return self.on_device({"waveform": waveform.to(device)})

    def export_frontend(self) -> ExportFrontend:
        """The log-mel front end, so a deployer can feed mono waveforms at ``sample_rate``."""
        waveform = 0.1 * torch.randn(2, self.num_samples, generator=torch.Generator().manual_seed(0))
        return ExportFrontend(
            module=copy.deepcopy(self.featurizer).cpu(),
            input_names=("waveform",),
            output_names=("features",),
            example={"waveform": waveform},
            dynamic_axes={"waveform": {0: "batch", 1: "samples"}},
            output_axes={"features": {0: "batch", 2: "frames"}},
            # float32 DFT rounding in near-silent bins, amplified by the log, reaches a few 1e-3 in
            # the normalised features; the embeddings through the chain are checked at the export atol.
            atol=2e-2,
            description=(
                f"mono float32 waveform [batch, samples] at {self.params.sample_rate} Hz -> "
                f"log-mel features [batch, {self.params.features.n_mels}, samples // "
                f"{self.params.features.hop_length} + 1]"
            ),
        )

    # -- description --------------------------------------------------------------------------

    def info(self) -> ModalityInfo:
        """``n_mels``, ``sample_rate``, ``hop_length``; ``extra``: ``frames`` and ``num_samples`` per clip."""
        return ModalityInfo(
            n_mels=self.params.features.n_mels,
            sample_rate=self.params.sample_rate,
            hop_length=self.params.features.hop_length,
            extra={"frames": self.num_frames, "num_samples": self.num_samples},
        )

    def input_spec(self) -> dict[str, Any]:
        f = self.params.features
        return {
            "inputs": {
                "features": {"dtype": "float32", "shape": ["batch", f.n_mels, "frames"]},
                "waveform": {"dtype": "float32", "shape": ["batch", "samples"]},
            },
            "dynamic_axes": {"features": {0: "batch", 2: "frames"}, "waveform": {0: "batch", 1: "samples"}},
            "preprocessing": {
                "sample_rate": self.params.sample_rate,
                "channels": "mono (mean of channels)",
                "duration_seconds": self.params.duration,
                "num_samples": self.num_samples,
                "length": "center crop or symmetric zero-pad to num_samples",
                "features": "log_mel",
                "n_fft": f.n_fft,
                "hop_length": f.hop_length,
                "win_length": f.win_length or f.n_fft,
                "window": "hann",
                "center": True,
                "pad_mode": "reflect",
                "power": 2.0,
                "n_mels": f.n_mels,
                "mel_scale": "htk",
                "mel_norm": None,
                "f_min": f.f_min,
                "f_max": f.f_max if f.f_max is not None else self.params.sample_rate / 2,
                "log": "natural log of (mel power + 1e-6)",
                "normalize": f.normalize,
                "normalize_formula": "(x - mean(x)) / max(std(x), 1e-5) over all mel bins and frames of one clip"
                if f.normalize == "utterance"
                else "none",
            },
        }

    def fingerprint(self) -> str:
        source = self.params.source
        if isinstance(source, DefaultAudioSource):
            return (
                f"synthetic-words(seed={source.seed}, clips={source.num_clips}, classes={source.num_classes}, "
                f"sr={self.params.sample_rate}, samples={self.num_samples})"
            )
        return f"folder({source.path}, files={len(self.scan.files)}, sha1={self.scan.fingerprint()})"
