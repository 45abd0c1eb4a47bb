"""Classify files with an exported classifier through onnxruntime: what ``sslhub predict`` runs.

The classifier is a file written by :func:`sslhub.export.export_classifier` (``classifier.onnx``
and its metadata, with ``class_names``). Files are decoded by :class:`sslhub.embed_files.FileEmbedder`,
exactly as ``sslhub embed`` decodes them (the modality plugins' file decoders, see
:mod:`sslhub.files`), and the graph's ``probabilities`` output is read. Like ``sslhub embed``
this needs numpy, onnxruntime (and onnx, Pillow, tokenizers or soundfile for the files) but
not PyTorch.

Example::

    predictions = FileClassifier("runs/image-simclr/finetune/few/model").predict(["photos/"])
    for source, label in zip(predictions.sources, predictions.predicted):
        print(source, label)
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sslhub.embed import read_exported_metadata
from sslhub.embed_files import EmbedError, FileEmbedder

#: The file stem :func:`sslhub.export.export_classifier` writes by default.
CLASSIFIER_NAME = "classifier"
#: The graph output holding the softmax over classes.
PROBABILITIES_OUTPUT = "probabilities"
#: Formats ``--out`` can have, by suffix.
OUTPUT_SUFFIXES = (".csv", ".jsonl")


class PredictError(EmbedError):
    """The model folder is not a classifier, or the output cannot be written; the message says why."""


@dataclass
class Predictions:
    """Class probabilities of a list of inputs.

    Attributes:
        sources: where each row came from (``path``, ``path:line`` for text, ``path:i`` for arrays).
        probabilities: ``[N, C]`` float32, each row summing to 1.
        class_names: the ``C`` class names, in column order.
    """

    sources: list[str]
    probabilities: np.ndarray
    class_names: list[str]

    @property
    def predicted(self) -> list[str]:
        """The most probable class of each row."""
        return [self.class_names[i] for i in self.probabilities.argmax(axis=1)] if len(self.sources) else []


def find_classifier(path: Path | str) -> Path:
    """The classifier ``.onnx`` file behind ``path``.

    ``path`` may be the file itself, the folder holding it (``classifier.onnx``, or the one
    model whose metadata says ``task: classification``), or a fine-tune folder whose
    ``model/`` sub-folder holds it.

    Raises:
        PredictError: no classifier there, with what the folder holds instead (an encoder
            export is for ``sslhub embed``; a pretraining run needs ``sslhub finetune`` first).
    """
    path = Path(path)
    if not path.exists():
        raise PredictError(f"{path} does not exist: pass the folder holding classifier.onnx, or a fine-tune folder")
    if path.is_file():
        if path.suffix != ".onnx":
            raise PredictError(f"{path} is not a model: pass the folder holding classifier.onnx, or the .onnx file")
        return path
    if not _models(path) and (path / "model").is_dir():
        path = path / "model"  # a fine-tune folder: RUN_DIR/finetune/NAME/model holds the export
    if (path / f"{CLASSIFIER_NAME}.onnx").is_file():
        return path / f"{CLASSIFIER_NAME}.onnx"
    classifiers = [m for m in _models(path) if read_exported_metadata(m).get("task") == "classification"]
    if len(classifiers) == 1:
        return classifiers[0]
    if classifiers:
        raise PredictError(f"{path} holds several classifiers {[m.name for m in classifiers]}: pass one of the files")
    raise PredictError(_no_classifier_message(path))


def _models(folder: Path) -> list[Path]:
    """The ``.onnx`` models in ``folder``, front ends (waveform to features) left out."""
    return sorted(p for p in folder.glob("*.onnx") if not p.name.endswith("frontend.onnx"))


def _no_classifier_message(folder: Path) -> str:
    """Why ``folder`` cannot be used by ``sslhub predict``, and what to pass instead."""
    if (folder / "recipe.yaml").is_file() or (folder / "checkpoints").is_dir():
        tuned = sorted(p for p in (folder / "finetune").glob("*") if p.is_dir())
        if tuned:
            listed = ", ".join(str(p) for p in tuned)
            return f"{folder} is a pretraining run; pass one of its fine-tuned classifiers: {listed}"
        return (
            f"{folder} is a pretraining run without a classifier: fine-tune it first (sslhub finetune {folder}); "
            f"to embed files with its encoder, use `sslhub embed {folder}`"
        )
    encoders = [m.name for m in _models(folder)]
    if encoders:
        return (
            f"{folder} holds an encoder export ({', '.join(encoders)}), not a classifier: it gives embeddings, "
            f"so use `sslhub embed {folder} FILES...`; `sslhub predict` needs the classifier.onnx that "
            "sslhub finetune (or sslhub.export.export_classifier) writes"
        )
    return f"{folder} holds no classifier.onnx: pass the folder sslhub finetune wrote (its model/ sub-folder)"


class FileClassifier:
    """An exported classifier plus the decoder for its kind of input files.

    Args:
        model: a classifier file, its folder, or a fine-tune folder (see :func:`find_classifier`).
        text_field: the ``.jsonl`` key holding the text.
        threads: onnxruntime intra-op threads (``None``: all cores).

    Raises:
        PredictError: not a classifier, or its metadata lacks usable ``class_names``.
    """

    def __init__(self, model: Path | str, *, text_field: str = "text", threads: int | None = None):
        self.path = find_classifier(model)
        # The class names first: a file without them gets that said, not "no output 'probabilities'".
        self.class_names = _class_names(self.path, read_exported_metadata(self.path))
        self.embedder = FileEmbedder(self.path, text_field=text_field, threads=threads, output=PROBABILITIES_OUTPUT)
        _check_width(self.path, self.embedder.model.session, self.class_names)

    @property
    def kind(self) -> str:
        """The kind of input files read: ``image``, ``text``, ``audio`` or ``arrays``."""
        return self.embedder.kind

    def predict(self, inputs: Sequence[Path | str], batch_size: int = 64) -> Predictions:
        """Class probabilities of every input file (folders expanded), ``batch_size`` samples at a time."""
        embedded = self.embedder.embed(inputs, batch_size=batch_size)
        probabilities = embedded.vectors.reshape(len(embedded.sources), len(self.class_names))
        return Predictions(embedded.sources, probabilities, list(self.class_names))


def _class_names(path: Path, metadata: dict[str, Any]) -> list[str]:
    """The metadata's ``class_names``, refused when missing or not a list of strings."""
    names = metadata.get("class_names")
    if names is None:
        raise PredictError(
            f"{path} has no class_names in its metadata: it is not a classifier written by "
            "sslhub.export.export_classifier (an encoder export is for `sslhub embed`)"
        )
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise PredictError(f"{path}: the metadata's class_names must be a non-empty list of strings, got {names!r}")
    return names


def _check_width(path: Path, session: Any, names: Sequence[str]) -> None:
    """Refuse a file whose probabilities output is not one column per class name."""
    output = next(o for o in session.get_outputs() if o.name == PROBABILITIES_OUTPUT)
    width = output.shape[-1] if output.shape else None
    if isinstance(width, int) and width != len(names):
        raise PredictError(
            f"{path} outputs {width} probabilities per input but its metadata names {len(names)} classes"
        )


def check_output_path(out: Path | str) -> Path:
    """``out`` if its suffix is a format :func:`write_predictions` writes, else a :class:`PredictError`."""
    out = Path(out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise PredictError(f"--out {out}: write predictions to a .csv or .jsonl file")
    return out


def write_predictions(predictions: Predictions, out: Path | str) -> Path:
    """Write one row per input to ``out``: the input, the predicted class, each class's probability.

    A ``.csv`` has the columns ``input``, ``predicted_class`` and ``probability:<class>`` per
    class; a ``.jsonl`` has one object per line, ``{"input", "predicted_class", "probabilities":
    {class: p}}``. Probabilities are written with 9 significant digits (float32 exactly).

    Returns:
        ``out``.
    """
    out = check_output_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = zip(predictions.sources, predictions.predicted, predictions.probabilities.tolist(), strict=True)
    names = predictions.class_names
    with out.open("w", newline="", encoding="utf-8") as handle:
        if out.suffix.lower() == ".csv":
            writer = csv.writer(handle)
            writer.writerow(["input", "predicted_class", *(f"probability:{n}" for n in names)])
            for source, predicted, row in rows:
                writer.writerow([source, predicted, *(f"{p:.9g}" for p in row)])
        else:
            for source, predicted, row in rows:
                probabilities = {n: float(f"{p:.9g}") for n, p in zip(names, row, strict=True)}
                record = {"input": source, "predicted_class": predicted, "probabilities": probabilities}
                handle.write(json.dumps(record) + "\n")
    return out


def predict_command(
    model: Path, inputs: Sequence[Path], out: Path, *, batch_size: int, threads: int | None, text_field: str
) -> int:
    """``sslhub predict``: classify ``inputs``, write ``out``, print a summary; the exit code."""
    check_output_path(out)
    classifier = FileClassifier(model, text_field=text_field, threads=threads)
    predictions = classifier.predict(inputs, batch_size=batch_size)
    write_predictions(predictions, out)
    counts = Counter(predictions.predicted)
    tally = ", ".join(f"{name} {counts[name]}" for name in predictions.class_names if counts[name])
    print(f"predicted {len(predictions.sources)} inputs ({classifier.kind}) with {classifier.path}: {tally}")
    print(f"wrote {out}")
    return 0
