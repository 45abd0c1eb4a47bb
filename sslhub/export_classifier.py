"""Verified ONNX export of a classifier: an encoder, a head on its pooled embedding, and class names.

:func:`export_classifier` is :func:`sslhub.export.export_encoder` with the head turned into
two outputs, ``logits [batch, C]`` and ``probabilities [batch, C]`` (softmax over classes),
both verified against PyTorch, and the class names stored in the metadata. ``sslhub predict``
(:mod:`sslhub.predict`) runs the file with onnxruntime alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sslhub.components import Encoder, Modality
from sslhub.export import DEFAULT_ATOL, DEFAULT_RTOL, ExportError, export_encoder

#: The graph's outputs, in order: unnormalised scores and their softmax over classes.
CLASSIFIER_OUTPUTS = ("logits", "probabilities")
#: The metadata's ``task`` for a classifier (``sslhub predict`` looks for it).
CLASSIFICATION_TASK = "classification"
#: What the metadata calls the head (its ``output.head``).
HEAD_NAME = "classifier"


class LogitsAndProbabilities(nn.Module):
    """``head(pooled) -> (logits, softmax(logits))``: the classifier's two outputs from one head."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """Map pooled features ``[B, D]`` to ``(logits [B, C], probabilities [B, C])``."""
        logits = self.head(pooled)
        return logits, torch.softmax(logits, dim=-1)


def export_classifier(
    encoder: Encoder,
    head: nn.Module,
    modality: Modality,
    class_names: Sequence[str],
    out_dir: Path,
    *,
    opset: int | None = None,
    name: str = "classifier",
) -> dict[str, Any]:
    """Export ``head(encoder(x))`` to ``out_dir/<name>.onnx`` with its class names, and verify it.

    The file takes the encoder's inputs (dynamic batch axis, and sequence/time axes where the
    modality declares them, as :func:`sslhub.export.export_encoder`) and returns ``logits``
    and ``probabilities``, both ``[batch, C]`` float32. Its metadata (in the file and in
    ``<name>.metadata.json``) is the encoder export's document plus ``task: classification``,
    ``class_names`` and ``outputs`` (both outputs described); the tokenizer or front end the
    modality needs is written beside it as for the encoder export.

    Args:
        encoder: the (fine-tuned) encoder; exported in eval mode on the CPU in float32, and
            left as it was.
        head: maps the encoder's pooled features ``[B, D]`` to logits ``[B, C]``.
        modality: the modality the encoder reads (example inputs, preprocessing).
        class_names: the name of each logit, in order (``C`` distinct strings).
        out_dir: folder to write into (created if missing; earlier files of ``name`` replaced).
        opset: ONNX opset (default 18, see :data:`sslhub.export.MIN_ONNX_OPSET`).
        name: file stem.

    Returns:
        The verification report: ``passed``, ``summary`` (lines for the terminal), ``path``,
        ``metadata_path``, ``opset``, ``max_abs_diff``, ``max_rel_diff``, ``checks``
        (per case, with each output's figures under ``outputs``), ``class_names``.

    Raises:
        ExportError: the head's width is not ``len(class_names)``, or any failure of the
            export or its verification (onnxruntime and PyTorch disagree on either output).
        ValueError: ``class_names`` is empty or repeats a name.
    """
    names = _checked_class_names(class_names)
    report = export_encoder(
        encoder,
        modality,
        Path(out_dir),
        opset=18 if opset is None else opset,
        atol=DEFAULT_ATOL,
        rtol=DEFAULT_RTOL,
        name=name,
        head=_WidthChecked(LogitsAndProbabilities(head), names),
        head_name=HEAD_NAME,
        output_names=CLASSIFIER_OUTPUTS,
        document={"task": CLASSIFICATION_TASK, "class_names": names, "outputs": _outputs_document(names)},
    )
    return {
        "passed": report.passed,
        "summary": report.summary() + f"\nclasses: {', '.join(names)}",
        "path": str(report.path),
        "metadata_path": str(report.metadata_path),
        "opset": report.opset,
        "max_abs_diff": report.max_abs_diff,
        "max_rel_diff": report.max_rel_diff,
        "checks": report.checks,
        "class_names": names,
    }


def _checked_class_names(class_names: Sequence[str]) -> list[str]:
    """``class_names`` as a list of strings, refused when empty or repeated."""
    names = [str(n) for n in class_names]
    if not names:
        raise ValueError("class_names is empty: a classifier needs one name per logit")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"class_names repeats {repeated}: each logit needs its own name")
    return names


def _outputs_document(class_names: Sequence[str]) -> list[dict[str, Any]]:
    """The metadata's description of the two outputs."""
    shape = ["batch", len(class_names)]
    return [
        {"name": "logits", "dtype": "float32", "shape": shape, "meaning": "unnormalised score of each class"},
        {
            "name": "probabilities",
            "dtype": "float32",
            "shape": shape,
            "meaning": "softmax of the logits: each row sums to 1, in the order of class_names",
        },
    ]


class _WidthChecked(nn.Module):
    """The head, refusing (while tracing the example) logits whose width is not the number of classes."""

    def __init__(self, head: nn.Module, class_names: Sequence[str]):
        super().__init__()
        self.head = head
        self.count = len(class_names)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        logits, probabilities = self.head(pooled)
        if logits.dim() == 2 and logits.shape[1] != self.count:  # shapes are static here: safe to trace
            raise ExportError(
                f"the head maps the pooled features to {logits.shape[1]} logits, but {self.count} class_names "
                "are given: they must agree"
            )
        return logits, probabilities
