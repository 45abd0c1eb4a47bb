"""Embed files (images, text, audio, arrays) with an exported model, using only its stored preprocessing.

This is what ``sslhub embed`` runs. It reads the metadata :func:`sslhub.export.export_encoder`
wrote and decodes files the way the modality did in training, with numpy, Pillow,
``tokenizers`` and ``soundfile`` only: no torch and no plugin code, so the same steps are
what a deployer has to reproduce.

The kind of input follows from the model's inputs:

- ``image``: image files, resized (shorter side, bilinear, antialiased) and center-cropped
  to ``image_size``, scaled to ``[0, 1]``, NCHW.
- ``input_ids`` + ``attention_mask``: ``.txt`` files (one document per non-empty line) or
  ``.jsonl`` files (one document per line, text under ``text_field``), tokenized with the
  ``tokenizer.json`` stored beside the model, wrapped in ``[CLS] ... [SEP]``, truncated to
  ``max_length`` and right-padded per batch.
- ``features`` (log-mel) with a ``frontend.onnx``: audio files, mixed to mono, resampled to
  ``sample_rate``, center-cropped or zero-padded to ``num_samples``, then the front end.
- anything else, and any model: ``.npz`` files holding one array per input name, or ``.npy``
  files for single-input models, already preprocessed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sslhub.embed import ExportedEncoder, find_model_file, make_session
from sslhub.errors import SSLHubError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TEXT_EXTENSIONS = (".txt", ".jsonl")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")
ARRAY_EXTENSIONS = (".npy", ".npz")


class EmbedError(SSLHubError):
    """The model folder or an input file cannot be used; the message names which and why."""


@dataclass
class Embeddings:
    """Embeddings of a list of inputs and where each row came from (``path`` or ``path:line``)."""

    vectors: np.ndarray
    sources: list[str]


def resolve_model_dir(path: Path | str, encoder_key: str | None = None) -> Path:
    """The export folder behind ``path``: an export folder, a ``.onnx`` file, or a run directory.

    A run directory's export is ``RUN_DIR/onnx`` (``RUN_DIR/onnx/KEY`` for runs with several
    encoders, chosen with ``encoder_key``).
    """
    path = Path(path)
    if not path.exists():
        raise EmbedError(f"{path} does not exist: pass a run directory or the folder sslhub export wrote")
    if path.is_file():
        if path.suffix != ".onnx":
            raise EmbedError(f"{path} is not a model: pass a run directory, an export folder or a .onnx file")
        return path.parent
    if (path / "onnx").is_dir():
        path = path / "onnx"
    elif (path / "checkpoints").is_dir() or (path / "recipe.yaml").is_file():
        raise EmbedError(f"{path} is a run without an ONNX export: run `sslhub export {path}` first")
    if any(path.glob("*.onnx")):
        if encoder_key:
            raise EmbedError(f"{path} holds a single-encoder export; drop --encoder {encoder_key}")
        return path
    keys = sorted(p.name for p in path.iterdir() if p.is_dir() and any(p.glob("*.onnx")))
    if not keys:
        raise EmbedError(f"{path} holds no .onnx model: export a run first (sslhub export RUN_DIR)")
    if encoder_key is None:
        if len(keys) == 1:
            return path / keys[0]
        raise EmbedError(f"{path} holds one model per encoder {keys}: choose one with --encoder KEY")
    if encoder_key not in keys:
        raise EmbedError(f"{path} has no encoder {encoder_key!r}; it has {keys}")
    return path / encoder_key


class FileEmbedder:
    """An exported encoder plus the decoder for its kind of input files.

    Args:
        model_dir: export folder or ``.onnx`` file (see :func:`resolve_model_dir` for run dirs).
        text_field: the ``.jsonl`` key holding the text.
        threads: onnxruntime intra-op threads (``None``: all cores).
        name: the model's file stem, when the folder holds several (``classifier``).
        output: the graph output to return (default: the first; ``sslhub predict`` takes
            a classifier's ``probabilities``).
    """

    def __init__(
        self,
        model_dir: Path | str,
        *,
        text_field: str = "text",
        threads: int | None = None,
        name: str | None = None,
        output: str | None = None,
    ):
        try:
            self.model = ExportedEncoder(model_dir, threads=threads, name=name, output=output)
        except (FileNotFoundError, ImportError, ValueError) as error:
            raise EmbedError(str(error)) from None
        self.folder = self.model.path.parent
        self.text_field = text_field
        self.metadata = self.model.metadata
        if not self.metadata:
            raise EmbedError(f"{self.model.path} has no sslhub metadata: it was not written by sslhub export")
        self.kind = _kind(self.model.input_names, self.metadata)
        self.preprocessing = _preprocessing(self.metadata, self.kind)
        self._tokenizer: Any = None
        self._frontend: Any = None

    # -- files ------------------------------------------------------------------------------

    def accepted_extensions(self) -> tuple[str, ...]:
        """File extensions this model's decoder reads (arrays are always accepted)."""
        own = {"image": IMAGE_EXTENSIONS, "text": TEXT_EXTENSIONS, "audio": AUDIO_EXTENSIONS}.get(self.kind, ())
        return own + ARRAY_EXTENSIONS

    def expand(self, inputs: Sequence[Path | str]) -> list[Path]:
        """Files named, and files with accepted extensions inside named folders (sorted, recursive)."""
        extensions = self.accepted_extensions()
        files: list[Path] = []
        for item in map(Path, inputs):
            if item.is_dir():
                found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
                if not found:
                    raise EmbedError(f"{item} holds no files this model reads ({', '.join(extensions)})")
                files.extend(found)
            elif item.is_file():
                if item.suffix.lower() not in extensions:
                    raise EmbedError(
                        f"{item}: this {self.kind} model reads {', '.join(extensions)} files, not {item.suffix or 'files without an extension'}"
                    )
                files.append(item)
            else:
                raise EmbedError(f"{item} does not exist")
        if not files:
            raise EmbedError("no input files given")
        return files

    def embed(self, inputs: Sequence[Path | str], batch_size: int = 64) -> Embeddings:
        """Embed every input file (folders expanded), ``batch_size`` samples at a time."""
        if batch_size <= 0:
            raise EmbedError(f"--batch-size must be > 0, got {batch_size}")
        vectors: list[np.ndarray] = []
        sources: list[str] = []
        batch: list[tuple[str, Any]] = []
        for source, sample in self._samples(self.expand(inputs)):
            if isinstance(sample, dict):  # preprocessed arrays: a whole file at once
                vectors.extend(self._flush(batch))
                batch = []
                vectors.append(self.model.embed(sample, batch_size=batch_size))
                count = vectors[-1].shape[0]
                sources.extend(source if count == 1 else f"{source}:{i}" for i in range(count))
                continue
            batch.append((source, sample))
            sources.append(source)
            if len(batch) == batch_size:
                vectors.extend(self._flush(batch))
                batch = []
        vectors.extend(self._flush(batch))
        stacked = np.concatenate(vectors, axis=0) if vectors else np.zeros((0, self.model.feature_dim or 0), np.float32)
        return Embeddings(stacked.astype(np.float32, copy=False), sources)

    def _samples(self, files: Sequence[Path]) -> Iterator[tuple[str, Any]]:
        for path in files:
            if path.suffix.lower() in ARRAY_EXTENSIONS:
                yield str(path), self._arrays(path)
            elif self.kind == "image":
                yield str(path), self._image(path)
            elif self.kind == "text":
                yield from self._texts(path)
            elif self.kind == "audio":
                yield str(path), self._waveform(path)
            else:
                raise EmbedError(f"{path}: this model's inputs {self.model.input_names} are read only from .npz/.npy")

    def _flush(self, batch: list[tuple[str, Any]]) -> list[np.ndarray]:
        if not batch:
            return []
        samples = [sample for _, sample in batch]
        if self.kind == "image":
            feeds = {"image": np.stack(samples)}
        elif self.kind == "text":
            feeds = self._pad_tokens(samples)
        else:
            feeds = self._features(np.stack(samples))
        return [self.model.run(feeds)]

    # -- arrays -----------------------------------------------------------------------------

    def _arrays(self, path: Path) -> dict[str, np.ndarray]:
        try:
            loaded = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise EmbedError(f"{path}: not a readable numpy file ({error})") from None
        if isinstance(loaded, np.ndarray):
            if len(self.model.input_names) != 1:
                raise EmbedError(
                    f"{path}: a .npy holds one array, but the model takes {self.model.input_names}: use a .npz"
                )
            return {self.model.input_names[0]: loaded}
        arrays = {name: loaded[name] for name in loaded.files}
        missing = [n for n in self.model.input_names if n not in arrays]
        if missing:
            raise EmbedError(f"{path} has arrays {sorted(arrays)}, the model also needs {missing}")
        return arrays

    # -- images -----------------------------------------------------------------------------

    def _image(self, path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        prep = self.preprocessing
        size, channels = int(prep["image_size"]), int(prep["channels"])
        try:
            with Image.open(path) as img:
                img = img.convert("L" if channels == 1 else "RGB")
                width, height = img.size
                scale = size / min(height, width)
                new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
                if (new_h, new_w) != (height, width):
                    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
                array = np.asarray(img, dtype=np.uint8)
        except (OSError, UnidentifiedImageError) as error:
            raise EmbedError(f"{path}: cannot decode the image ({error})") from None
        if array.ndim == 2:
            array = array[:, :, None]
        top, left = (array.shape[0] - size) // 2, (array.shape[1] - size) // 2
        array = array[top : top + size, left : left + size]
        return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32) / 255.0

    # -- text -------------------------------------------------------------------------------

    def _texts(self, path: Path) -> Iterator[tuple[str, list[int]]]:
        tokenizer = self._load_tokenizer()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise EmbedError(f"{path}: cannot read it as UTF-8 text ({error})") from None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            text = line
            if path.suffix.lower() == ".jsonl":
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise EmbedError(f"{path}:{number}: not JSON ({error.msg})") from None
                if not isinstance(record, dict) or not isinstance(record.get(self.text_field), str):
                    raise EmbedError(f"{path}:{number}: no string field {self.text_field!r} (use --text-field)")
                text = record[self.text_field]
            yield f"{path}:{number}", self._token_ids(tokenizer, text)

    def _load_tokenizer(self) -> Any:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            tokenizer_file = self.folder / str(self.preprocessing.get("tokenizer_file") or "tokenizer.json")
            if not tokenizer_file.is_file():
                raise EmbedError(f"{tokenizer_file} is missing: export the run again to copy the tokenizer beside it")
            self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        return self._tokenizer

    def _token_ids(self, tokenizer: Any, text: str) -> list[int]:
        prep = self.preprocessing
        head = [prep["cls_token_id"]] if prep.get("cls_token_id") is not None else []
        tail = [prep["sep_token_id"]] if prep.get("sep_token_id") is not None else []
        width = int(prep["max_length"]) - len(head) - len(tail)
        ids = tokenizer.encode(text, add_special_tokens=False).ids[:width]
        return head + ids + tail

    def _pad_tokens(self, sequences: list[list[int]]) -> dict[str, np.ndarray]:
        pad = int(self.preprocessing.get("pad_token_id") or 0)
        length = max(len(s) for s in sequences)
        ids = np.full((len(sequences), length), pad, dtype=np.int64)
        mask = np.zeros((len(sequences), length), dtype=np.int64)
        for row, sequence in enumerate(sequences):
            ids[row, : len(sequence)] = sequence
            mask[row, : len(sequence)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    # -- audio ------------------------------------------------------------------------------

    def _waveform(self, path: Path) -> np.ndarray:
        import soundfile

        prep = self.preprocessing
        try:
            data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        except (RuntimeError, OSError, soundfile.LibsndfileError) as error:
            raise EmbedError(f"{path}: cannot decode the audio ({error})") from None
        if data.shape[0] == 0:
            raise EmbedError(f"{path}: the file holds no samples")
        waveform = data.mean(axis=1)
        target = int(prep["sample_rate"])
        if rate != target:
            waveform = _resample(waveform, rate, target, path)
        return _fix_length(waveform, int(prep["num_samples"]))

    def _features(self, waveforms: np.ndarray) -> dict[str, np.ndarray]:
        if self._frontend is None:
            frontend = self.metadata.get("frontend") or {}
            if not frontend.get("exported"):
                reason = frontend.get("reason", "this export has none")
                raise EmbedError(
                    f"{self.model.path} takes log-mel features and no waveform front end was exported ({reason}); "
                    "compute the features as input_spec.preprocessing describes and pass them as .npz"
                )
            self._frontend = make_session(find_model_file(self.folder, Path(frontend["file"]).stem))
        outputs = self._frontend.run(None, {"waveform": waveforms.astype(np.float32)})
        names = [o.name for o in self._frontend.get_outputs()]
        return dict(zip(names, outputs, strict=True))


def _kind(input_names: Sequence[str], metadata: dict[str, Any]) -> str:
    names = list(input_names)
    if names == ["image"]:
        return "image"
    if names == ["input_ids", "attention_mask"]:
        return "text"
    if names == ["features"] and (metadata.get("frontend") or {}).get("input_names") == ["waveform"]:
        return "audio"
    return "arrays"


def _preprocessing(metadata: dict[str, Any], kind: str) -> dict[str, Any]:
    """The preprocessing constants of this model's part (composite modalities nest them by part)."""
    prep = dict((metadata.get("input_spec") or {}).get("preprocessing") or {})
    if isinstance(prep.get(kind), dict):
        return prep[kind]
    return prep


def _fix_length(waveform: np.ndarray, num_samples: int) -> np.ndarray:
    """Center-crop or symmetrically zero-pad to ``num_samples`` (as the audio modality does)."""
    length = waveform.shape[0]
    if length > num_samples:
        start = (length - num_samples) // 2
        return waveform[start : start + num_samples]
    if length < num_samples:
        missing = num_samples - length
        return np.pad(waveform, (missing // 2, missing - missing // 2))
    return waveform


def _resample(waveform: np.ndarray, rate: int, target: int, path: Path) -> np.ndarray:
    """Polyphase resampling (scipy); training used torchaudio's sinc resampler, so values differ slightly."""
    try:
        from math import gcd

        from scipy.signal import resample_poly
    except ImportError:
        raise EmbedError(f"{path} is at {rate} Hz, the model expects {target} Hz: install scipy to resample") from None
    divisor = gcd(rate, target)
    return resample_poly(waveform, target // divisor, rate // divisor).astype(np.float32)


def save_embeddings(embeddings: Embeddings, out: Path) -> tuple[Path, Path]:
    """Write ``out`` (``.npy``, ``[N, D]`` float32) and ``out`` with ``.sources.txt`` (one source per row).

    Returns:
        The two paths written: the ``.npy`` file and the sources file.
    """
    out = Path(out).with_suffix(".npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, embeddings.vectors)
    sources = out.with_suffix(".sources.txt")
    sources.write_text("".join(f"{s}\n" for s in embeddings.sources))
    return out, sources
