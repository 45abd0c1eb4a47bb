"""Input files to batches of a model's input arrays: the modality-free part, shared by embed, predict and load.

:class:`InputDecoder` expands folders, reads ``.npy``/``.npz`` files (already preprocessed, any
model) and hands every other file to the modality plugin's :class:`sslhub.files.FileDecoder`
that accepts the model's inputs. It imports no torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sslhub.files import DecodeError, FileDecoder, ModelInputs, RegisteredDecoder, choose_decoder, installed_decoders

ARRAY_EXTENSIONS = (".npy", ".npz")

#: One decoded file's worth: its source and a plugin sample, or ``dict`` of arrays (``.npz``/``.npy``).
Sample = tuple[str, Any]


class InputDecoder:
    """The decoder for one model's input files: the plugin's for its modality, plus arrays.

    Args:
        model: the model's inputs, metadata and folder.
        registered: the decoders to choose from (default: those installed in ``sslhub.files``).
        where: the model, for messages (its ``.onnx`` file or folder).
    """

    def __init__(
        self, model: ModelInputs, registered: Sequence[RegisteredDecoder] | None = None, where: Path | None = None
    ):
        self.model = model
        self.where = where or model.folder
        self.plugin: FileDecoder | None = choose_decoder(
            model, installed_decoders() if registered is None else registered
        )

    @property
    def kind(self) -> str:
        """The kind of input files read (the plugin decoder's, e.g. ``image``), or ``arrays``."""
        return self.plugin.kind if self.plugin is not None else "arrays"

    def accepted_extensions(self) -> tuple[str, ...]:
        """File extensions read: the plugin decoder's, then ``.npy``/``.npz``."""
        own = tuple(e.lower() for e in self.plugin.extensions) if self.plugin is not None else ()
        return own + ARRAY_EXTENSIONS

    def expand(self, inputs: Sequence[Path | str]) -> list[Path]:
        """Files named, and files with accepted extensions inside named folders (sorted, recursive)."""
        extensions = self.accepted_extensions()
        files: list[Path] = []
        for item in map(Path, inputs):
            if item.is_dir():
                found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
                if not found:
                    raise DecodeError(f"{item} holds no files this model reads ({', '.join(extensions)})")
                files.extend(found)
            elif item.is_file():
                if item.suffix.lower() not in extensions:
                    suffix = item.suffix or "files without an extension"
                    raise DecodeError(
                        f"{item}: this {self.kind} model reads {', '.join(extensions)} files, not {suffix}"
                        + self._hint()
                    )
                files.append(item)
            else:
                raise DecodeError(f"{item} does not exist")
        if not files:
            raise DecodeError("no input files given")
        return files

    def _hint(self) -> str:
        if self.plugin is not None:
            return ""
        return (
            f" (no installed file decoder accepts its inputs {list(self.model.input_names)}; "
            "a modality plugin registers one in the sslhub.files entry-point group)"
        )

    def samples(self, files: Sequence[Path]) -> Iterator[Sample]:
        """Each file's samples in order: ``(source, sample)``, arrays files as one ``dict`` of arrays each."""
        for path in files:
            if path.suffix.lower() in ARRAY_EXTENSIONS:
                yield str(path), self.arrays(path)
            elif self.plugin is not None:
                yield from self.plugin.read(path)
            else:
                raise DecodeError(
                    f"{path}: this model's inputs {list(self.model.input_names)} are read only from .npz/.npy"
                )

    def batches(
        self, inputs: Sequence[Path | str], batch_size: int
    ) -> Iterator[tuple[list[str], dict[str, np.ndarray]]]:
        """``(sources, input arrays)`` per batch of at most ``batch_size`` samples; an arrays file is a batch of its own."""
        if batch_size <= 0:
            raise DecodeError(f"--batch-size must be > 0, got {batch_size}")
        batch: list[Sample] = []
        for source, sample in self.samples(self.expand(inputs)):
            if isinstance(sample, dict):
                if batch:
                    yield self._collated(batch)
                    batch = []
                count = len(sample[self.model.input_names[0]])
                yield [source if count == 1 else f"{source}:{i}" for i in range(count)], sample
                continue
            batch.append((source, sample))
            if len(batch) == batch_size:
                yield self._collated(batch)
                batch = []
        if batch:
            yield self._collated(batch)

    def _collated(self, batch: list[Sample]) -> tuple[list[str], dict[str, np.ndarray]]:
        assert self.plugin is not None  # only plugin samples are batched
        return [source for source, _ in batch], self.plugin.collate([sample for _, sample in batch])

    def batch(self, files: Sequence[Path | str], records: Sequence[Any] = ()) -> dict[str, np.ndarray]:
        """All of ``files`` (folders expanded), then ``records`` (texts), as one batch of input arrays."""
        samples = [sample for _, sample in self.samples(self.expand(files))] if files else []
        if records:
            if self.plugin is None:
                raise DecodeError(f"this model's inputs {list(self.model.input_names)} are read only from .npz/.npy")
            samples += self.plugin.read_records(records)
        if not samples:
            raise DecodeError("nothing to preprocess: pass files or texts")
        arrays = [s for s in samples if isinstance(s, dict)]
        if arrays and len(arrays) != len(samples):
            raise DecodeError("pass .npz/.npy files apart from other files: they are already preprocessed")
        if arrays:
            return {name: np.concatenate([a[name] for a in arrays]) for name in self.model.input_names}
        assert self.plugin is not None
        return self.plugin.collate(samples)

    def arrays(self, path: Path) -> dict[str, np.ndarray]:
        """A ``.npz`` (one array per input name) or ``.npy`` (single-input models) file's arrays."""
        names = list(self.model.input_names)
        try:
            loaded = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DecodeError(f"{path}: not a readable numpy file ({error})") from None
        if isinstance(loaded, np.ndarray):
            if len(names) != 1:
                raise DecodeError(f"{path}: a .npy holds one array, but the model takes {names}: use a .npz")
            return {names[0]: loaded}
        arrays = {name: loaded[name] for name in loaded.files}
        missing = [n for n in names if n not in arrays]
        if missing:
            raise DecodeError(f"{path} has arrays {sorted(arrays)}, the model also needs {missing}")
        return arrays
