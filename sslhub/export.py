"""Verified, self-describing ONNX export of an encoder's pooled embedding.

:func:`export_encoder` writes ``<name>.onnx`` (weights in ``<name>.onnx.data`` beside it,
referenced by a relative path so the folder can be moved), stores everything a deployer
needs as ONNX ``metadata_props`` and as ``metadata.json``, and then checks the file: the
ONNX checker, and onnxruntime against PyTorch on fresh inputs of batch sizes (and
sequence/time lengths) other than the ones it was traced with.

The exported graph takes the encoder's ``input_names`` (axis 0 of each is the batch axis;
other axes vary where the modality's ``input_spec()["dynamic_axes"]`` says so) and returns
one output, ``pooled``: ``[batch, feature_dim]`` float32.

Encoders whose graph ``torch.onnx.export`` cannot capture may define::

    def export_onnx(self, out_path: Path, example_inputs: tuple[Tensor, ...], opset: int) -> None

which must write an ONNX file at ``out_path`` whose inputs are named ``input_names`` (in
that order) and whose first output is the pooled embedding. The metadata and verification
steps below run on that file exactly as on one written by ``torch.onnx.export``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import math
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sslhub.components import DEFAULT_ENCODER_KEY, Encoder, EncoderSet, Modality
from sslhub.errors import SSLHubError

#: Where the metadata lives inside the ONNX file: ``metadata_props`` keys ``sslhub.<key>``,
#: each value a JSON string; ``metadata.json`` holds the same dictionary.
METADATA_PREFIX = "sslhub."
METADATA_FORMAT = "sslhub-onnx-encoder"
METADATA_FORMAT_VERSION = 1
OUTPUT_NAME = "pooled"
INSTALL_HINT = "pip install onnx onnxscript onnxruntime"
#: Batch size of the example the graph is traced with; verification uses other sizes.
TRACE_BATCH_SIZE = 2
#: Batch sizes the exported model is verified at (1 catches graphs specialised to the trace size).
VERIFY_BATCH_SIZES = (1, 5)
#: Fractions of the traced length used to verify the other dynamic axes (sequence, time).
VERIFY_LENGTH_FRACTIONS = (0.75, 0.5)
#: Opsets ``torch.onnx.export(dynamo=True)`` writes here: its operator library starts at 18 (asked
#: for less, it usually falls back to 18 without failing), and onnxscript's version converter
#: goes up to 25 (asked for more, the file claims 18 and onnxruntime refuses it).
MIN_ONNX_OPSET = 18
MAX_ONNX_OPSET = 25
#: Default tolerances: a case passes when ``max_abs_diff <= atol + rtol * max|reference|``.
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-4
TOLERANCE_RULE = "max_abs_diff <= atol + rtol * reference_max_abs, in every case"

#: ``(encoder, example_inputs, dynamic_axes, out_path, opset) -> plugin name or None``.
PluginExporter = Callable[[Encoder, tuple[Tensor, ...], dict[str, dict[int, str]], Path, int], "str | None"]

# Loggers that warn on every failed export, in words the exception already says better.
_NOISY_LOGGERS = ("torch.fx.experimental.symbolic_shapes", "torch._dynamo", "torch.export", "torch._export")
# Warnings the exporter emits on every export, which say nothing actionable to the user.
_NOISY_WARNINGS = (
    r".*axis name: .* will not be used.*",
    r".*isinstance\(treespec, LeafSpec\).*",
)


class ExportError(SSLHubError):
    """The export or its verification failed; the message says what failed and what to do.

    Attributes:
        details: the exporter's full output (traceback text, logs), for ``--debug``; may be empty.
    """

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


@dataclass
class ExportReport:
    """What :func:`export_encoder` wrote and how closely onnxruntime matched PyTorch.

    Attributes:
        path: the ``.onnx`` file.
        metadata_path: the ``metadata.json`` beside it.
        opset: ONNX opset of the default domain, as written in the file.
        checks: one entry per verification case: ``batch_size``, ``axes`` (size of every
            dynamic axis, by name), ``max_abs_diff``, ``max_rel_diff``, ``reference_max_abs``
            (largest ``|pytorch|``), ``tolerance`` (``atol + rtol * reference_max_abs``), ``passed``.
        max_abs_diff: largest ``|onnxruntime - pytorch|`` over all cases.
        max_rel_diff: largest per-case ``max_abs_diff / max|pytorch|``.
        atol: the absolute part of the tolerance.
        passed: whether every case's ``max_abs_diff`` is within its ``tolerance``.
        data_path: the external weights file, if the exporter wrote one.
        rtol: the relative part of the tolerance (a fraction of the case's largest output magnitude).
        requested_opset: the opset asked for (differs from ``opset`` only when a custom exporter ignored it).
    """

    path: Path
    metadata_path: Path
    opset: int
    checks: list[dict[str, Any]]
    max_abs_diff: float
    max_rel_diff: float
    atol: float
    passed: bool
    data_path: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)
    rtol: float = DEFAULT_RTOL
    requested_opset: int | None = None

    def summary(self) -> str:
        """A few lines for the terminal: files, worst differences, verdict, one line per case."""
        files = str(self.path) + (f" (+ {self.data_path.name})" if self.data_path else "")
        verdict = "passed" if self.passed else "FAILED"
        asked = f" (asked for {self.requested_opset})" if self.requested_opset not in (None, self.opset) else ""
        lines = [
            f"ONNX export: {files}, opset {self.opset}{asked}",
            f"onnxruntime vs PyTorch on {len(self.checks)} fresh inputs: max abs diff {self.max_abs_diff:.2e}, "
            f"max rel diff {self.max_rel_diff:.2e} (tolerance atol {self.atol:.0e} + rtol {self.rtol:.0e} "
            f"x max|output|): {verdict}",
        ]
        for check in self.checks:
            axes = " ".join(f"{k}={v}" for k, v in check["axes"].items())
            worst = f" (worst output: {check['output']})" if check.get("output") else ""
            lines.append(
                f"  {axes}: abs {check['max_abs_diff']:.2e}, rel {check['max_rel_diff']:.2e}, "
                f"max|output| {check['reference_max_abs']:.3g}, tolerance {check['tolerance']:.2e}{worst}"
            )
        head = (self.metadata.get("output") or {}).get("head")
        if head:
            lines.append(f"output: head {head} applied to the pooled embedding")
        frontend = self.metadata.get("frontend")
        if frontend and frontend.get("exported"):
            lines.append(
                f"front end: {frontend['file']} ({', '.join(frontend['input_names'])} -> "
                f"{', '.join(frontend['output_names'])}): features max abs diff {frontend['max_abs_diff']:.2e} "
                f"(rel {frontend['max_rel_diff']:.2e}), embeddings through both files "
                f"{frontend['end_to_end_max_abs_diff']:.2e} (rel {frontend['end_to_end_max_rel_diff']:.2e})"
            )
        elif frontend:
            lines.append(f"front end not exported: {frontend.get('reason')}")
        for name in self.metadata.get("files") or []:
            lines.append(f"copied beside it: {name}")
        return "\n".join(lines)


def export_encoder(
    encoder: Encoder,
    modality: Modality,
    out_dir: Path,
    *,
    opset: int = 18,
    atol: float = DEFAULT_ATOL,
    allow_mismatch: bool = False,
    metadata: dict[str, Any] | None = None,
    name: str = "model",
    modality_name: str | None = None,
    head: nn.Module | None = None,
    head_name: str | None = None,
    plugin_exporter: PluginExporter | None = None,
    export_frontend: bool = True,
    rtol: float = DEFAULT_RTOL,
    output_names: Sequence[str] | None = None,
    document: Mapping[str, Any] | None = None,
) -> ExportReport:
    """Export ``encoder``'s pooled embedding to ONNX, describe it, and verify it.

    The encoder is exported in eval mode, on the CPU, in float32 (a copy is made if it lives
    elsewhere; its training mode is restored afterwards). Inputs are traced from
    ``modality.example_batch(2)``; axis 0 of every input is dynamic (``batch``), and so is
    every axis named in ``modality.input_spec()["dynamic_axes"]`` (inputs sharing an axis
    name share one dimension).

    Args:
        encoder: the trained encoder; its ``export_module()`` maps ``input_names`` tensors to
            ``pooled [B, D]``. If it has ``export_onnx(out_path, example_inputs, opset)`` that
            is used instead of ``torch.onnx.export``.
        modality: the modality it was trained on (example inputs, input spec, preprocessing).
        out_dir: folder to write ``<name>.onnx``, its weights file and the metadata JSON into
            (created if missing; earlier files of the same name are replaced).
        opset: ONNX opset, :data:`MIN_ONNX_OPSET` to :data:`MAX_ONNX_OPSET` for the built-in
            exporter (its native opset is 18); a custom exporter may write others. The metadata
            records the opset the file declares.
        atol: absolute part of the tolerance.
        allow_mismatch: return a report with ``passed=False`` instead of raising when the
            difference exceeds the tolerance.
        metadata: extra JSON-serialisable facts to store (resolved recipe, plugin versions).
        name: file stem; the metadata file is ``metadata.json`` for the default name and
            ``<name>.metadata.json`` otherwise (so several encoders can share a folder).
        modality_name: the modality's registry key for the metadata; defaults to the
            modality's ``name`` attribute or class name.
        head: a module applied to the pooled embedding (an objective's projection head, see
            :meth:`sslhub.Objective.export_heads`); the model then outputs ``head(pooled)``.
        head_name: what the metadata calls the head (``simclr.projection``); the output is
            named after its last part.
        plugin_exporter: offered the encoder before the built-in exporter (the plugins'
            ``sslhub_export_encoder`` hooks, see :meth:`sslhub.Catalog.export_with_plugins`);
            returns the name of the plugin that wrote the file, or ``None``.
        export_frontend: also export ``modality.export_frontend()`` (waveform to log-mel) as
            ``frontend.onnx`` when the modality has one and the exporter can capture it.
        rtol: relative part of the tolerance: each verification case passes when its
            ``max |onnxruntime - pytorch| <= atol + rtol * max |pytorch|``, so large
            activations are not held to float32 rounding at an absolute scale.
        output_names: the graph's outputs, when ``head`` returns a tuple of ``[batch, width]``
            tensors (a classifier's logits and probabilities); every one is verified, the
            first is the metadata's ``output``. Default: one output, ``pooled`` or named
            after the head.
        document: top-level keys added to the metadata document (or replacing its own),
            such as a classifier's ``class_names``.

    Returns:
        The report: paths, per-case differences, verdict.

    Raises:
        ExportError: onnx/onnxscript/onnxruntime are missing, the exporter failed, the file
            fails the ONNX checker or does not run in onnxruntime, the output is not
            ``[batch, feature_dim]``, the built-in exporter is asked for an opset it does not
            write, or (without ``allow_mismatch``) the outputs differ by more than the tolerance.
        ValueError: bad arguments (``atol < 0``, ``rtol < 0``, empty ``input_names``).
    """
    _check_arguments(encoder, name, atol, rtol, head, head_name)
    _require_onnx_stack()
    paths = _ExportPaths.in_folder(Path(out_dir), name)
    spec = modality.input_spec() or {}
    if output_names is None:
        output_names = (OUTPUT_NAME if head is None else _output_name(head_name),)
    written = _write_and_verify(
        encoder, modality, paths, spec, opset, atol, rtol, head, head_name, tuple(output_names),
        plugin_exporter, export_frontend,
    )  # fmt: skip
    files = [str(f) for f in modality.write_export_files(paths.onnx.parent, tuple(encoder.input_names))]

    verification = verification_document(written.checks, atol, rtol)
    doc = _metadata_document(
        encoder=encoder,
        modality=modality,
        modality_name=modality_name,
        spec=spec,
        example=written.example,
        axes=written.axes,
        feature_dim=written.feature_dim,
        opset=written.opset,
        requested_opset=opset,
        name=name,
        verification=verification,
        extra=metadata or {},
        output_name=output_names[0],
        head_name=head_name,
        exported_by=written.written_by,
        frontend=written.frontend,
        files=files,
    )
    doc.update(_jsonable(dict(document or {})))
    _write_metadata(paths.onnx, paths.metadata, doc)
    _check_model(paths.onnx)

    passed = verification["passed"]
    report = ExportReport(
        path=paths.onnx,
        metadata_path=paths.metadata,
        opset=written.opset,
        checks=written.checks,
        max_abs_diff=verification["max_abs_diff"],
        max_rel_diff=verification["max_rel_diff"],
        atol=atol,
        passed=passed,
        data_path=written.data_path,
        metadata=doc,
        rtol=rtol,
        requested_opset=opset,
    )
    if not passed and not allow_mismatch:
        raise _mismatch_error(type(encoder).__name__, report)
    return report


def _check_arguments(
    encoder: Encoder, name: str, atol: float, rtol: float, head: nn.Module | None, head_name: str | None
) -> None:
    """Refuse arguments :func:`export_encoder` cannot work with, before anything is written."""
    if atol < 0 or rtol < 0:
        raise ValueError(f"atol and rtol must be >= 0, got atol={atol}, rtol={rtol}")
    if not encoder.input_names:
        raise ValueError(
            f"{type(encoder).__name__}.input_names is empty: set it to the batch keys the encoder reads, "
            "in the order the exported model should take them"
        )
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"name must be a plain file stem (letters, digits, '_', '.', '-'), got {name!r}")
    if head is not None and not head_name:
        raise ValueError("head_name is required with head")


@dataclass(frozen=True)
class _ExportPaths:
    """The files one export writes: ``<name>.onnx``, its metadata JSON and its front end."""

    onnx: Path
    metadata: Path
    frontend: Path

    @classmethod
    def in_folder(cls, out_dir: Path, name: str) -> _ExportPaths:
        """The paths for ``name`` in ``out_dir`` (created), with earlier files of that name removed."""
        out_dir.mkdir(parents=True, exist_ok=True)
        default = name == "model"
        paths = cls(
            onnx=out_dir / f"{name}.onnx",
            metadata=out_dir / ("metadata.json" if default else f"{name}.metadata.json"),
            frontend=out_dir / ("frontend.onnx" if default else f"{name}.frontend.onnx"),
        )
        for stale in (paths.onnx, out_dir / f"{name}.onnx.data", paths.metadata, paths.frontend):
            stale.unlink(missing_ok=True)
        return paths


@dataclass
class _Written:
    """What :func:`_write_and_verify` traced, wrote and measured."""

    example: dict[str, Tensor]
    axes: dict[str, dict[int, str]]
    feature_dim: int
    written_by: str
    data_path: Path | None
    opset: int
    checks: list[dict[str, Any]]
    frontend: dict[str, Any] | None


def _write_and_verify(
    encoder: Encoder,
    modality: Modality,
    paths: _ExportPaths,
    spec: Mapping[str, Any],
    opset: int,
    atol: float,
    rtol: float,
    head: nn.Module | None,
    head_name: str | None,
    output_names: tuple[str, ...],
    plugin_exporter: PluginExporter | None,
    export_frontend: bool,
) -> _Written:
    """Trace, write and check ``paths.onnx`` (and the front end), then measure it against PyTorch."""
    input_names = tuple(encoder.input_names)
    cpu_encoder, restore = _cpu_float_eval(encoder)
    cpu_head, restore_head = _cpu_float_eval(head) if head is not None else (None, lambda: None)
    try:
        module = cpu_encoder.export_module().eval()
        if cpu_head is not None:
            module = _WithHead(module, cpu_head).eval()
        example = _encoder_inputs(modality, input_names, TRACE_BATCH_SIZE, seed=0)
        axes = _dynamic_axes(spec.get("dynamic_axes") or {}, example)
        with torch.inference_mode():
            outputs = module(*example.values())
        reference = _check_output(outputs, encoder, TRACE_BATCH_SIZE, head_name, len(output_names))
        written_by = _run_exporter(
            cpu_encoder, module, example, axes, paths.onnx, opset, output_names, plugin_exporter,
            with_head=head is not None,
        )  # fmt: skip
        # Exporters restore the training flag of the module they were handed, which for a
        # fresh export_module() wrapper is True: make sure PyTorch is compared in eval mode.
        cpu_encoder.eval()
        module.eval()
        data_path = _name_axes(paths.onnx, input_names, axes, len(output_names))
        _check_model(paths.onnx)
        written_opset = _written_opset(paths.onnx, opset, written_by)
        checks = _verify(module, modality, paths.onnx, input_names, example, axes, encoder, head_name, output_names)
        frontend = None
        if export_frontend:
            from sslhub.frontend_export import export_frontend as write_frontend

            # The front end is checked end to end through the first (primary) output.
            primary = module if len(output_names) == 1 else _FirstOutput(module)
            frontend = write_frontend(
                modality, paths.frontend, input_names, written_opset, primary, paths.onnx, atol, rtol=rtol
            )
    finally:
        restore()
        restore_head()
    feature_dim = int(reference[0].shape[1])
    return _Written(example, axes, feature_dim, written_by, data_path, written_opset, checks, frontend)


def _mismatch_error(encoder_name: str, report: ExportReport) -> ExportError:
    """The error for a failed verification: the worst case, its figures and its tolerance."""
    worst = max(report.checks, key=lambda c: c["max_abs_diff"] - c["tolerance"])
    where = " ".join(f"{k}={v}" for k, v in worst["axes"].items())
    if worst.get("output"):
        where += f", output '{worst['output']}'"
    return ExportError(
        f"The ONNX model of {encoder_name} does not match PyTorch: max abs diff {worst['max_abs_diff']:.3g} "
        f"(relative {worst['max_rel_diff']:.3g} of the largest output {worst['reference_max_abs']:.3g}, at {where}) "
        f"exceeds the tolerance {worst['tolerance']:.3g} = atol {report.atol:g} + rtol {report.rtol:g} x "
        f"{worst['reference_max_abs']:.3g}. The file is left at {report.path} for inspection. "
        "Look for randomness or export-only branches in forward, or raise export.onnx.atol/rtol, "
        "or allow_mismatch=True to keep it anyway.",
        details=report.summary(),
    )


# --- preparing the encoder and its inputs ---------------------------------------------------


def _require_onnx_stack() -> None:
    """Fail early, in words, when a package the export needs is missing."""
    missing = []
    for package in ("onnx", "onnxscript", "onnxruntime"):
        try:
            importlib.import_module(package)
        except ImportError:
            missing.append(package)
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ExportError(
            f"ONNX export needs {', '.join(missing)}, which {verb} not installed. Install with: {INSTALL_HINT}"
        )


def _cpu_float_eval(encoder: Encoder) -> tuple[Encoder, Any]:
    """The encoder in eval mode on the CPU in float32, and a function undoing the side effects.

    An encoder already on the CPU in float32 is used in place (only its mode changes, and is
    restored); any other is deep-copied so the caller's model keeps its device and dtype.
    """
    tensors = [*encoder.parameters(), *encoder.buffers()]
    in_place = all(t.device.type == "cpu" and (not t.is_floating_point() or t.dtype == torch.float32) for t in tensors)
    if in_place:
        was_training = encoder.training
        encoder.eval()
        return encoder, lambda: encoder.train(was_training)
    import copy

    clone = copy.deepcopy(encoder).to(device="cpu", dtype=torch.float32).eval()
    return clone, lambda: None


def _encoder_inputs(modality: Modality, input_names: Sequence[str], batch_size: int, seed: int) -> dict[str, Tensor]:
    """``modality.example_batch(batch_size)`` on the CPU, restricted to ``input_names`` in order.

    The global RNG is forked so exporting does not disturb the caller's random stream; if
    the example lacks an input the encoder reads, ``modality.on_device`` is applied (some
    modalities compute encoder inputs such as spectrograms there).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        batch = dict(modality.example_batch(batch_size=batch_size, device="cpu"))
        if any(n not in batch for n in input_names):
            batch = dict(modality.on_device(batch))
    missing = [n for n in input_names if n not in batch]
    if missing:
        raise ExportError(
            f"{type(modality).__name__}.example_batch() has no {missing} (it has {sorted(batch)}), but the encoder "
            f"reads {list(input_names)}: make example_batch return every encoder input"
        )
    out = {}
    for n in input_names:
        t = batch[n]
        if not isinstance(t, Tensor):
            raise ExportError(f"example_batch()['{n}'] is a {type(t).__name__}, not a tensor")
        t = t.detach().cpu()
        out[n] = t.float() if t.is_floating_point() else t
    return out


def _dynamic_axes(
    declared: Mapping[str, Mapping[Any, str]], example: Mapping[str, Tensor]
) -> dict[str, dict[int, str]]:
    """Every input's dynamic axes ``{axis: name}``: the declared ones, plus axis 0 as the batch axis."""
    batch_names = {str(axes.get(0, axes.get("0", ""))) for axes in declared.values()} - {""}
    batch_name = "batch" if not batch_names or "batch" in batch_names else sorted(batch_names)[0]
    result: dict[str, dict[int, str]] = {}
    for input_name, tensor in example.items():
        axes = {int(k): str(v) for k, v in (declared.get(input_name) or {}).items()}
        for axis in axes:
            if not 0 <= axis < tensor.dim():
                raise ExportError(
                    f"input_spec()['dynamic_axes']['{input_name}'] names axis {axis}, but the example "
                    f"'{input_name}' has shape {list(tensor.shape)}"
                )
        axes.setdefault(0, batch_name)
        result[input_name] = dict(sorted(axes.items()))
    return result


def _check_output(
    output: Any, encoder: Encoder, batch_size: int, head: str | None = None, count: int = 1
) -> tuple[Tensor, ...]:
    """The export module's ``count`` outputs, each checked to be ``[batch, width]`` floating point.

    Without a ``head`` the one output is the pooled embedding, whose width must be the
    encoder's ``feature_dim``; with one, each width is the head's own.
    """
    name = type(encoder).__name__ if head is None else f"{type(encoder).__name__} + head {head}"
    outputs = tuple(output) if isinstance(output, tuple | list) else (output,)
    if len(outputs) != count:
        raise ExportError(f"{name}.export_module() returned {len(outputs)} outputs; the export names {count}")
    for single in outputs:
        if not isinstance(single, Tensor):
            raise ExportError(
                f"{name}.export_module() returned {type(single).__name__}; it must return the pooled tensor"
            )
        if single.dim() != 2 or single.shape[0] != batch_size or not single.is_floating_point():
            raise ExportError(
                f"{name}.export_module() returned {single.dtype} {list(single.shape)} for batch size {batch_size}; "
                "it must return the pooled embedding, float [batch, feature_dim]"
            )
    if head is None and encoder.feature_dim and outputs[0].shape[1] != encoder.feature_dim:
        raise ExportError(
            f"{name}.export_module() returned {outputs[0].shape[1]} features per sample, but {name}.feature_dim "
            f"is {encoder.feature_dim}: make them agree"
        )
    return outputs


# --- running the exporter ---------------------------------------------------------------------


def _dynamic_shapes(module: nn.Module, axes: Mapping[str, Mapping[int, str]]) -> tuple[Any, ...]:
    """``dynamic_shapes`` for ``torch.export``, laid out like ``module.forward``'s parameters.

    Axes with the same name share one :class:`torch.export.Dim`, so the exporter knows
    ``input_ids`` and ``attention_mask`` have the same length.
    """
    import inspect

    dims: dict[str, Any] = {}

    def dim(axis_name: str) -> Any:
        if axis_name not in dims:
            # Dim names become Python symbols; the ONNX names are set afterwards from ``axes``.
            symbol = re.sub(r"\W", "_", axis_name)
            dims[axis_name] = torch.export.Dim(symbol if symbol.isidentifier() else f"d_{symbol}")
        return dims[axis_name]

    per_input = [{axis: dim(n) for axis, n in input_axes.items()} for input_axes in axes.values()]
    shapes: list[Any] = []
    position = 0
    positional_kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    for parameter in inspect.signature(module.forward).parameters.values():
        if parameter.kind == parameter.VAR_POSITIONAL:
            shapes.append(tuple(per_input[position:]))
            position = len(per_input)
        elif parameter.kind in positional_kinds and position < len(per_input):
            shapes.append(per_input[position])
            position += 1
    if position != len(per_input):
        raise ExportError(
            f"{type(module).__name__}.forward takes fewer positional inputs than the {len(per_input)} input_names"
        )
    return tuple(shapes)


def _run_exporter(
    encoder: Encoder,
    module: nn.Module,
    example: Mapping[str, Tensor],
    axes: Mapping[str, Mapping[int, str]],
    onnx_path: Path,
    opset: int,
    output_names: Sequence[str] = (OUTPUT_NAME,),
    plugin_exporter: PluginExporter | None = None,
    with_head: bool = False,
) -> str:
    """Write ``onnx_path``: a plugin's hook, else the encoder's ``export_onnx``, else ``torch.onnx.export``.

    The exporter prints graphs and progress as it works: that text is kept for the error's
    ``details`` rather than shown.

    Returns:
        Who wrote the file: ``plugin:NAME``, ``export_onnx`` or ``torch.onnx.export``.
    """
    args = tuple(example.values())
    log = io.StringIO()
    # A head is only known to sslhub's own wrapper, so custom exporters are skipped with one.
    custom = None if with_head else getattr(encoder, "export_onnx", None)
    how = "torch.onnx.export"
    try:
        with exporter_output_to(log):
            plugin = None
            if plugin_exporter is not None and not with_head:
                how = "a plugin's sslhub_export_encoder hook"
                plugin = plugin_exporter(encoder, args, {k: dict(v) for k, v in axes.items()}, onnx_path, opset)
            if plugin:
                how = f"plugin:{plugin}"
            elif callable(custom):
                how = f"{type(encoder).__name__}.export_onnx"
                custom(onnx_path, args, opset)
            else:
                how = "torch.onnx.export"
                check_opset(opset)
                torch.onnx.export(
                    module,
                    args,
                    str(onnx_path),
                    dynamo=True,
                    dynamic_shapes=_dynamic_shapes(module, axes),
                    opset_version=opset,
                    external_data=True,
                    input_names=list(example),
                    output_names=list(output_names),
                    verbose=False,
                )
    except ExportError:
        raise
    except Exception as error:
        import traceback

        advice = (
            "Fix the plugin, or leave it out of this export with -p no:PLUGIN."
            if how.startswith("a plugin")
            else "Common causes: Python control flow on tensor values in forward (if x.sum() > 0), "
            ".item()/.tolist()/numpy calls, shapes fixed to the example size."
        )
        raise ExportError(
            f"ONNX export of {type(encoder).__name__} failed in {how}:\n{_summarize_exception(error)}\n"
            f"Run with --debug for the full trace. {advice}",
            details=log.getvalue() + "".join(traceback.format_exception(error)),
        ) from error
    if not onnx_path.is_file():
        raise ExportError(f"{how} did not write {onnx_path}")
    return "export_onnx" if how.endswith(".export_onnx") else how


def check_opset(opset: int) -> None:
    """Refuse an opset ``torch.onnx.export(dynamo=True)`` would not write (it would silently write 18)."""
    if not MIN_ONNX_OPSET <= opset <= MAX_ONNX_OPSET:
        raise ExportError(
            f"opset {opset} is outside what torch.onnx's exporter writes here ({MIN_ONNX_OPSET} to "
            f"{MAX_ONNX_OPSET}): pick one in that range (18 is its native opset)"
        )


def read_opset(onnx_path: Path) -> int | None:
    """The default-domain (``ai.onnx``) opset an ONNX file declares, or ``None`` if it declares none."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    versions = [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")]
    return int(versions[0]) if versions else None


def _written_opset(onnx_path: Path, requested: int, written_by: str) -> int:
    """The opset ``onnx_path`` declares; a warning when the exporter wrote another than asked for."""
    written = read_opset(onnx_path)
    if written is None:
        raise ExportError(f"{onnx_path} declares no ai.onnx opset ({written_by} wrote it); it cannot be run")
    if written != requested:
        warnings.warn(
            f"opset {requested} was asked for, but {written_by} wrote opset {written}; the metadata records {written}",
            stacklevel=3,
        )
    return written


class _WithHead(nn.Module):
    """``head(encoder_export(*inputs))``: the pooled embedding passed through an objective's head."""

    def __init__(self, pooled: nn.Module, head: nn.Module):
        super().__init__()
        self.pooled = pooled
        self.head = head

    def forward(self, *inputs: Tensor) -> Any:
        return self.head(self.pooled(*inputs))


class _FirstOutput(nn.Module):
    """The first of a module's outputs: what the front end's end-to-end check compares."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.module(*inputs)[0]


def _output_name(head_name: str) -> str:
    """The graph output's name for a head: the last dotted part of its name, as an identifier."""
    return re.sub(r"\W", "_", head_name.rsplit(".", 1)[-1]) or "head"


@contextlib.contextmanager
def exporter_output_to(log: io.StringIO) -> Iterator[None]:
    """Send the exporter's prints, progress lines and routine warnings to ``log`` for the block."""
    with (
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
        warnings.catch_warnings(),
        _quiet_loggers(_NOISY_LOGGERS),
    ):
        for pattern in _NOISY_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        yield


@contextlib.contextmanager
def _quiet_loggers(names: Sequence[str]) -> Iterator[None]:
    """Raise these loggers to ERROR for the block (torch's handlers write past ``redirect_stderr``)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _summarize_exception(error: BaseException, max_lines: int = 6) -> str:
    """A few lines that say what went wrong: the exception's first line, the root cause, the user's code.

    ``torch.onnx`` wraps the real error in a long message: its first line names the failing
    step, the line after ``## Exception summary`` the cause, and ``The following call raised
    this error`` the user's source line.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # the exporter colours its messages
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text)  # <class 'torch.x.Y'> -> Y
    lines = [line.rstrip() for line in text.splitlines()]
    nonempty = [line.split(" Next steps:")[0].strip() for line in lines if line.strip()]
    picked = [f"{type(error).__name__}: {nonempty[0]}" if nonempty else type(error).__name__]

    def after(marker: str, count: int) -> list[str]:
        for i, line in enumerate(lines):
            if line.strip().startswith(marker):
                return [line.strip() for line in lines[i + 1 :] if line.strip()][:count]
        return []

    picked += [f"  cause: {line}" for line in after("## Exception summary", 1)]
    picked += [f"  at: {line}" for line in after("The following call raised this error", 2)]
    cause = error.__cause__
    if len(picked) == 1 and cause is not None:
        cause_text = str(cause).strip().splitlines()
        picked.append(f"  cause: {type(cause).__name__}: {cause_text[0] if cause_text else ''}")
    return "\n".join(line[:300] for line in picked[:max_lines])


# --- rewriting and checking the ONNX file ------------------------------------------------------


def _name_axes(
    onnx_path: Path, input_names: Sequence[str], axes: Mapping[str, Mapping[int, str]], output_count: int = 1
) -> Path | None:
    """Give the graph's dynamic dimensions the modality's axis names; return the weights file, if any.

    The exporter names dimensions after the ``Dim`` symbols (or ``s0``...); deployers read
    these names, so they should match the metadata. The first axis of the first
    ``output_count`` outputs (those sslhub declared) is ``batch``.
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph_inputs = [i.name for i in model.graph.input]
    if list(graph_inputs[: len(input_names)]) != list(input_names):
        raise ExportError(
            f"The exported graph's inputs are {graph_inputs}, expected {list(input_names)} (the encoder's "
            "input_names, in order); a custom export_onnx must name its inputs that way"
        )
    for value in model.graph.input:
        for axis, axis_name in (axes.get(value.name) or {}).items():
            dims = value.type.tensor_type.shape.dim
            if axis < len(dims):
                dims[axis].dim_param = axis_name
    batch_name = next(iter(axes.values()))[0]
    for output in model.graph.output[:output_count]:
        out_dims = output.type.tensor_type.shape.dim
        if out_dims:
            out_dims[0].dim_param = batch_name
    onnx.save_model(model, str(onnx_path))

    locations = {
        entry.value
        for tensor in model.graph.initializer
        for entry in tensor.external_data
        if tensor.data_location == onnx.TensorProto.EXTERNAL and entry.key == "location"
    }
    return onnx_path.parent / sorted(locations)[0] if locations else None


def _check_model(onnx_path: Path) -> None:
    """``onnx.checker`` by path, which also reads external weights and works above 2 GB."""
    import onnx

    try:
        onnx.checker.check_model(str(onnx_path), full_check=False)
    except Exception as error:  # onnx raises ValidationError, or OSError for a missing weights file
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(
            f"{onnx_path} fails the ONNX checker: {first}. Try another opset, or report the encoder's "
            "export as a bug with this message.",
            details=str(error),
        ) from error


# --- verification against PyTorch ---------------------------------------------------------------


def _verification_cases(
    axes: Mapping[str, Mapping[int, str]], example: Mapping[str, Tensor]
) -> list[tuple[int, dict[str, int]]]:
    """``(batch_size, {axis_name: new_length})`` cases, none of them the traced shape.

    Each verification batch size is checked at the modality's own length; when there are
    other dynamic axes (sequence, time), two more cases shorten every one of them to 3/4
    and 1/2 of the traced length (slicing keeps token ids, masks and waveforms valid,
    where padding would need modality knowledge).
    """
    traced: dict[str, int] = {}
    for input_name, input_axes in axes.items():
        for axis, axis_name in input_axes.items():
            if axis != 0:
                traced.setdefault(axis_name, int(example[input_name].shape[axis]))
    cases: list[tuple[int, dict[str, int]]] = [(b, {}) for b in VERIFY_BATCH_SIZES]
    for i, fraction in enumerate(VERIFY_LENGTH_FRACTIONS):
        lengths = {n: max(1, int(round(size * fraction))) for n, size in traced.items()}
        lengths = {n: size for n, size in lengths.items() if size != traced[n]}
        if lengths and all(lengths != c[1] for c in cases):
            cases.append((VERIFY_BATCH_SIZES[-1 - i % len(VERIFY_BATCH_SIZES)], lengths))
    return cases


def _shorten(
    inputs: Mapping[str, Tensor], axes: Mapping[str, Mapping[int, str]], lengths: Mapping[str, int]
) -> dict[str, Tensor]:
    """Slice every input along its named dynamic axes to ``lengths[axis_name]``."""
    out = {}
    for input_name, tensor in inputs.items():
        for axis, axis_name in (axes.get(input_name) or {}).items():
            if axis != 0 and axis_name in lengths and tensor.shape[axis] > lengths[axis_name]:
                tensor = tensor.narrow(axis, 0, lengths[axis_name])
        out[input_name] = tensor.contiguous()
    return out


def verification_document(checks: list[dict[str, Any]], atol: float, rtol: float) -> dict[str, Any]:
    """The metadata's ``verification``: the tolerance, the verdict, the worst figures, every case.

    Judges ``checks`` in place (see :func:`judge_checks`).
    """
    passed = judge_checks(checks, atol, rtol)
    return {
        "atol": atol,
        "rtol": rtol,
        "rule": TOLERANCE_RULE,
        "passed": passed,
        "max_abs_diff": max(c["max_abs_diff"] for c in checks),
        "max_rel_diff": max(c["max_rel_diff"] for c in checks),
        "checks": checks,
    }


def judge_checks(checks: Sequence[dict[str, Any]], atol: float, rtol: float) -> bool:
    """Give each check its ``tolerance`` and ``passed`` (see :data:`TOLERANCE_RULE`); whether all passed.

    The tolerance scales with the largest output magnitude of the case, because float32
    rounding does: activations in the hundreds differ by more than 1e-4 in a correct export.
    """
    for check in checks:
        if "outputs" in check:
            _judge_outputs(check, atol, rtol)
            continue
        check["tolerance"] = atol + rtol * check["reference_max_abs"]
        check["passed"] = bool(check["max_abs_diff"] <= check["tolerance"])
    return all(check["passed"] for check in checks)


def _judge_outputs(check: dict[str, Any], atol: float, rtol: float) -> None:
    """Judge a case of several outputs: each against its own scale; the case shows the worst one.

    The case's figures (``max_abs_diff``, ``max_rel_diff``, ``reference_max_abs``,
    ``tolerance``) are those of its output furthest over (or least under) its tolerance, named
    in ``output``, so that a mismatch error reports figures that belong together; ``outputs``
    keeps every output's.
    """
    outputs = check["outputs"]
    for figures in outputs.values():
        figures["tolerance"] = atol + rtol * figures["reference_max_abs"]
        figures["passed"] = bool(figures["max_abs_diff"] <= figures["tolerance"])
    worst = max(outputs, key=lambda n: outputs[n]["max_abs_diff"] - outputs[n]["tolerance"])
    check.update(
        output=worst,
        max_abs_diff=outputs[worst]["max_abs_diff"],
        max_rel_diff=outputs[worst]["max_rel_diff"],
        reference_max_abs=outputs[worst]["reference_max_abs"],
        tolerance=outputs[worst]["tolerance"],
        passed=all(f["passed"] for f in outputs.values()),
    )


def output_differences(actual: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """``max_abs_diff``, ``max_rel_diff`` (see :func:`compare_outputs`) and ``reference_max_abs``.

    Args:
        actual: onnxruntime output.
        expected: PyTorch output of the same shape.
    """
    max_abs, max_rel = compare_outputs(actual, expected)
    finite = np.abs(expected[np.isfinite(expected)]) if expected.size else np.zeros(0)
    scale = float(finite.max()) if finite.size else 0.0
    return {"max_abs_diff": max_abs, "max_rel_diff": max_rel, "reference_max_abs": scale}


def compare_outputs(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """``(max |actual - expected|, that / max |expected|)``.

    The relative figure is taken against the largest reference magnitude rather than per
    element, so near-zero features do not make it explode. NaN in the same place in both is
    agreement; NaN in one only, or different shapes, count as an infinite difference.

    Args:
        actual: onnxruntime output, ``[B, D]``.
        expected: PyTorch output, ``[B, D]``.
    """
    if actual.shape != expected.shape:
        return math.inf, math.inf
    actual = actual.astype(np.float64)
    expected = expected.astype(np.float64)
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    if (nan_a != nan_e).any():
        return math.inf, math.inf
    ok = ~nan_e
    if not ok.any():
        return 0.0, 0.0
    diff = float(np.abs(actual[ok] - expected[ok]).max())
    scale = float(np.abs(expected[ok]).max())
    return diff, (diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf))


def _verify(
    module: nn.Module,
    modality: Modality,
    onnx_path: Path,
    input_names: Sequence[str],
    example: Mapping[str, Tensor],
    axes: Mapping[str, Mapping[int, str]],
    encoder: Encoder,
    head_name: str | None = None,
    output_names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Run onnxruntime and PyTorch on fresh inputs of untraced shapes; one result per case.

    With several ``output_names`` each case also holds ``outputs``: the figures of every output
    (see :func:`judge_checks`); otherwise the graph's first output is compared.
    """
    from sslhub.embed import make_session

    try:
        session = make_session(onnx_path)
    except Exception as error:
        raise ExportError(
            f"onnxruntime cannot load {onnx_path}: {str(error).strip().splitlines()[0] if str(error).strip() else error}. "
            "An operator may be unsupported at this opset: try another opset.",
            details=str(error),
        ) from error
    # One output: the graph's first, whatever a plugin's or the encoder's own exporter named it.
    names = list(output_names) if output_names and len(output_names) > 1 else [session.get_outputs()[0].name]
    checks = []
    for case, (batch_size, lengths) in enumerate(_verification_cases(axes, example)):
        inputs = _shorten(_encoder_inputs(modality, input_names, batch_size, seed=1000 + case), axes, lengths)
        sizes: dict[str, int] = {}
        for input_name, input_axes in axes.items():
            for axis, axis_name in input_axes.items():
                sizes[axis_name] = int(inputs[input_name].shape[axis])
        with torch.inference_mode():
            expected = _check_output(module(*inputs.values()), encoder, batch_size, head_name, len(names))
        actual = _run_session(session, onnx_path, names, inputs)
        per_output = {
            name: output_differences(np.asarray(a), e.float().numpy())
            for name, a, e in zip(names, actual, expected, strict=True)
        }
        figures = per_output[names[0]] if len(names) == 1 else {"outputs": per_output}
        checks.append({"batch_size": batch_size, "axes": sizes, **figures})
    return checks


def _run_session(session: Any, onnx_path: Path, names: Sequence[str], inputs: Mapping[str, Tensor]) -> list[Any]:
    """``session.run(names, inputs)``, its failure said in words that point at the dynamic axes."""
    try:
        return list(session.run(list(names), {n: t.numpy() for n, t in inputs.items()}))
    except Exception as error:
        shapes = ", ".join(f"{n} {list(t.shape)}" for n, t in inputs.items())
        raise ExportError(
            f"onnxruntime failed to run {onnx_path.name} on inputs {shapes}: {str(error).strip().splitlines()[0]}. "
            "The graph is probably specialised to the traced shape; check the modality's dynamic_axes.",
            details=str(error),
        ) from error


# --- metadata ------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """``value`` made JSON-serialisable: tuples to lists, numpy/torch scalars to numbers, the rest to str."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic | np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if hasattr(value, "model_dump"):  # pydantic models (a resolved recipe)
        return _jsonable(value.model_dump(mode="json"))
    return str(value)


def _versions() -> dict[str, str]:
    versions = {"torch": torch.__version__}
    for package in ("onnx", "onnxscript", "onnxruntime", "sslhub"):
        with contextlib.suppress(Exception):
            versions[package] = str(importlib.import_module(package).__version__)
    return versions


def _metadata_document(
    *,
    encoder: Encoder,
    modality: Modality,
    modality_name: str | None,
    spec: Mapping[str, Any],
    example: Mapping[str, Tensor],
    axes: Mapping[str, Mapping[int, str]],
    feature_dim: int,
    opset: int,
    name: str,
    verification: dict[str, Any],
    requested_opset: int | None = None,
    extra: Mapping[str, Any],
    output_name: str = OUTPUT_NAME,
    head_name: str | None = None,
    exported_by: str = "torch.onnx.export",
    frontend: Mapping[str, Any] | None = None,
    files: Sequence[str] = (),
) -> dict[str, Any]:
    """Everything a deployer needs, as one JSON-ready dictionary (see :data:`METADATA_PREFIX`)."""
    inputs = {}
    for input_name, tensor in example.items():
        shape: list[Any] = list(tensor.shape)
        for axis, axis_name in axes[input_name].items():
            shape[axis] = axis_name
        inputs[input_name] = {"dtype": str(tensor.dtype).removeprefix("torch."), "shape": shape}
    batch_name = next(iter(axes.values()))[0]
    input_spec = {
        **{k: v for k, v in spec.items() if k not in ("inputs", "dynamic_axes", "preprocessing")},
        "input_names": list(example),
        "inputs": inputs,
        "dynamic_axes": {n: {str(axis): axis_name for axis, axis_name in a.items()} for n, a in axes.items()},
        "preprocessing": spec.get("preprocessing") or {},
    }
    if spec.get("inputs"):
        input_spec["declared_inputs"] = spec["inputs"]
    encoder_class = type(encoder)
    return _jsonable(
        {
            "format": {"name": METADATA_FORMAT, "version": METADATA_FORMAT_VERSION},
            "model_name": name,
            "modality": modality_name or getattr(modality, "name", None) or type(modality).__name__,
            "encoder": f"{encoder_class.__module__}.{encoder_class.__qualname__}",
            "input_spec": input_spec,
            "output": {
                "name": output_name,
                "dtype": "float32",
                "shape": [batch_name, feature_dim],
                "meaning": (
                    f"pooled embedding [{batch_name}, D]: one {feature_dim}-dim vector per sample"
                    if head_name is None
                    else f"head '{head_name}' applied to the pooled embedding: one {feature_dim}-dim vector per sample"
                ),
                "head": head_name,
            },
            "expects": _expects(list(example), frontend),
            "frontend": dict(frontend) if frontend else None,
            "files": list(files),
            "exported_by": exported_by,
            "feature_dim": feature_dim,
            "opset": opset,
            "requested_opset": opset if requested_opset is None else requested_opset,
            "versions": _versions(),
            "verification": verification,
            "metadata": dict(extra),
        }
    )


def _expects(input_names: Sequence[str], frontend: Mapping[str, Any] | None) -> str:
    """One sentence saying what the model file takes, and whether a front end can produce it."""
    text = f"{', '.join(input_names)} as described under input_spec"
    if frontend and frontend.get("exported"):
        raw = ", ".join(frontend["input_names"])
        return f"{text}; {frontend['file']} turns {raw} into {', '.join(frontend['output_names'])}"
    if frontend:
        return f"{text}; the front end from raw input was not exported ({frontend.get('reason')})"
    return text


def _write_metadata(onnx_path: Path, metadata_path: Path, doc: Mapping[str, Any]) -> None:
    """Store ``doc`` as ``metadata_props`` (``sslhub.<key>`` -> JSON) and as a JSON file."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    kept = [p for p in model.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in doc.items():
        model.metadata_props.add(key=METADATA_PREFIX + key, value=json.dumps(value, sort_keys=True))
    onnx.save_model(model, str(onnx_path))
    metadata_path.write_text(json.dumps(doc, indent=2) + "\n")


@dataclass(frozen=True)
class RunExportSetup:
    """What exporting a run's encoder(s) needs from the run besides the encoders.

    Attributes:
        modality: the run's modality (example inputs, frontend).
        modality_name: its registered name.
        device: where the encoders live; each is moved to the CPU to export and back after.
        metadata: stored in every export's metadata (recipe, plugins).
        onnx_spec: the recipe's ``export.onnx`` section, or None for the defaults.
        plugin_exporter: offers an encoder to the plugins' ``sslhub_export_encoder`` hooks.
        encoder_keys, objective_names: per objective, its ``encoders:`` key (None: all) and name.
    """

    modality: Modality
    modality_name: str
    device: torch.device
    metadata: Mapping[str, Any]
    onnx_spec: Any
    plugin_exporter: Callable[..., str | None] | None
    encoder_keys: Sequence[str | None]
    objective_names: Sequence[str]


def export_run(
    setup: RunExportSetup,
    encoders: EncoderSet,
    out_dir: Path,
    opset: int | None = None,
    allow_mismatch: bool = False,
    objectives: Sequence[nn.Module] = (),
    include_head: str | None = None,
) -> dict[str, Any]:
    """Export each encoder to verified ONNX: ``out_dir`` for ``encoder:``, ``out_dir/KEY/`` for ``encoders:``.

    Args:
        encoders: the run's encoders (the key ``default`` for a recipe's ``encoder:``).
        include_head: ``OBJECTIVE.HEAD`` (see ``Objective.export_heads``): the encoder that
            head belongs to is exported as ``head(pooled)``; needs ``objectives``.

    Returns:
        ``{KEY, or "encoder" for the default key: {path, max_abs_diff, max_rel_diff, opset, passed, summary}}``.
    """
    spec = setup.onnx_spec
    head_key, head_name, head = None, None, None
    if include_head:
        head_key, head_name, head = select_export_head(setup, objectives, include_head)
    results: dict[str, Any] = {}
    for key, single in encoders.items():
        # The default encoder keeps the layout of one-encoder runs: files in out_dir, no key.
        own_key = None if key == DEFAULT_ENCODER_KEY else key
        own_head = head if head is not None and head_key == key else None
        try:
            report = export_encoder(
                single.to("cpu"),
                setup.modality,
                out_dir if own_key is None else out_dir / own_key,
                opset=opset or (spec.opset if spec else 18),
                atol=spec.atol if spec else DEFAULT_ATOL,
                rtol=spec.rtol if spec else DEFAULT_RTOL,
                allow_mismatch=allow_mismatch,
                metadata={**setup.metadata, "encoder_key": own_key},
                modality_name=setup.modality_name,
                head=own_head,
                head_name=head_name if own_head is not None else None,
                plugin_exporter=setup.plugin_exporter,
            )
        finally:
            single.to(setup.device)
        results[own_key or "encoder"] = {
            "path": str(report.path),
            "max_abs_diff": report.max_abs_diff,
            "max_rel_diff": report.max_rel_diff,
            "opset": report.opset,
            "passed": report.passed,
            "summary": report.summary(),
        }
    return results


def select_export_head(
    setup: RunExportSetup, objectives: Sequence[nn.Module], wanted: str
) -> tuple[str | None, str, nn.Module]:
    """``(encoder key, full head name, head)`` for ``--include-head``, or an error listing the heads.

    A head of an objective over several encoders is named ``ENCODER_KEY.name`` by the objective.
    """
    heads: dict[str, tuple[str | None, nn.Module]] = {}
    for position, objective in enumerate(objectives):
        for name, module in objective.export_heads().items():
            key = setup.encoder_keys[position]
            if key is None and "." in name:
                key = name.split(".", 1)[0]
            heads[f"{setup.objective_names[position]}.{name}"] = (key, module)
    matches = [n for n in heads if n == wanted] or [n for n in heads if n.endswith(f".{wanted}")]
    if len(matches) != 1:
        available = ", ".join(sorted(heads)) or "none (no objective of this recipe has exportable heads)"
        problem = "matches several heads" if matches else "is not a head of this run"
        raise ExportError(f"--include-head {wanted!r} {problem}; available: {available}")
    key, module = heads[matches[0]]
    return key, matches[0], module


def __getattr__(name: str) -> Any:
    """``sslhub.export.export_classifier``: it lives in :mod:`sslhub.export_classifier`, which builds on this module.

    Imported on first use rather than at the end of this file, so that importing either module
    first works (an import at the end would find the other module half-initialised).
    """
    if name == "export_classifier":
        from sslhub.export_classifier import export_classifier

        return export_classifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
