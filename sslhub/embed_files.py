"""Embed files with an exported model, using only its stored preprocessing: what ``sslhub embed`` runs.

It reads the metadata :func:`sslhub.export.export_encoder` wrote and decodes files through
:class:`sslhub.decoding.InputDecoder`: the file decoder of the modality plugin that accepts
the model's inputs (``sslhub.files`` entry points: images, ``.txt``/``.jsonl`` texts and audio
for the built-ins), or ``.npz``/``.npy`` files holding already preprocessed arrays, for any
model. No torch is imported, so the same steps are what a deployer has to reproduce.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sslhub.decoding import ARRAY_EXTENSIONS, InputDecoder
from sslhub.embed import ExportedEncoder
from sslhub.files import DecodeError, ModelInputs

__all__ = ["ARRAY_EXTENSIONS", "EmbedError", "Embeddings", "FileEmbedder", "resolve_model_dir", "save_embeddings"]

#: The error of ``sslhub embed``: a model folder or input file that cannot be used (the message says why).
EmbedError = DecodeError


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
    return _encoder_export_dir(path, encoder_key)


def _encoder_export_dir(path: Path, encoder_key: str | None) -> Path:
    """The one encoder's folder of a several-encoder export (``path/KEY``)."""
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
        if not self.model.metadata:
            raise EmbedError(f"{self.model.path} has no sslhub metadata: it was not written by sslhub export")
        inputs = ModelInputs(
            tuple(self.model.input_names), self.model.metadata, self.model.path.parent, {"text_field": text_field}
        )
        self.decoder = InputDecoder(inputs, where=self.model.path)

    @property
    def kind(self) -> str:
        """The kind of input files read (``image``, ``text``, ``audio``... or ``arrays``)."""
        return self.decoder.kind

    def accepted_extensions(self) -> tuple[str, ...]:
        """File extensions this model's decoder reads (arrays are always accepted)."""
        return self.decoder.accepted_extensions()

    def expand(self, inputs: Sequence[Path | str]) -> list[Path]:
        """Files named, and files with accepted extensions inside named folders (sorted, recursive)."""
        return self.decoder.expand(inputs)

    def embed(self, inputs: Sequence[Path | str], batch_size: int = 64) -> Embeddings:
        """Embed every input file (folders expanded), ``batch_size`` samples at a time."""
        vectors: list[np.ndarray] = []
        sources: list[str] = []
        for batch_sources, feeds in self.decoder.batches(inputs, batch_size):
            try:
                vectors.append(self.model.embed(feeds, batch_size=batch_size))
            except ValueError as error:  # a decoder's arrays that do not fit the graph: name both
                raise EmbedError(
                    f"{batch_sources[0]}: the {self.kind} decoder's arrays do not fit {self.model.path}: {error}"
                ) from None
            sources.extend(batch_sources)
        empty = np.zeros((0, self.model.feature_dim or 0), np.float32)
        stacked = np.concatenate(vectors, axis=0) if vectors else empty
        return Embeddings(stacked.astype(np.float32, copy=False), sources)


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
