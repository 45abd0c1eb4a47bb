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
steps run on that file exactly as on one written by ``torch.onnx.export``.

This module holds the entry points (:func:`export_encoder`, :func:`export_run`) and the order
of the steps; the steps live beside it: :mod:`sslhub.export_module` (the PyTorch module and
its inputs), :mod:`sslhub.onnx_trace` (writing and checking the file),
:mod:`sslhub.export_verify` (onnxruntime against PyTorch) and :mod:`sslhub.export_metadata`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sslhub.components import DEFAULT_ENCODER_KEY, Encoder, EncoderSet, Modality
from sslhub.export_error import ExportError
from sslhub.export_metadata import metadata_document, to_jsonable, write_metadata
from sslhub.export_module import (
    FirstOutput,
    check_export_output,
    example_encoder_inputs,
    export_module_on_cpu,
    input_dynamic_axes,
)
from sslhub.export_verify import verification_document, verify_against_pytorch
from sslhub.onnx_trace import (
    PluginExporter,
    check_onnx_model,
    name_dynamic_axes,
    require_onnx_stack,
    write_onnx,
    written_opset,
)

# isort: split
# Public names that lived in this module before the steps moved out, still importable from
# here for code outside sslhub; sslhub's own modules import them from where they are defined.
from sslhub.export_metadata import METADATA_FORMAT, METADATA_FORMAT_VERSION, METADATA_PREFIX  # noqa: F401
from sslhub.export_verify import (  # noqa: F401
    TOLERANCE_RULE,
    VERIFY_BATCH_SIZES,
    VERIFY_LENGTH_FRACTIONS,
    compare_outputs,
    judge_checks,
    output_differences,
)
from sslhub.onnx_trace import (  # noqa: F401
    INSTALL_HINT,
    MAX_ONNX_OPSET,
    MIN_ONNX_OPSET,
    check_opset,
    exporter_output_to,
    read_opset,
)

OUTPUT_NAME = "pooled"
#: Batch size of the example the graph is traced with; verification uses other sizes.
TRACE_BATCH_SIZE = 2
#: Default tolerances: a case passes when ``max_abs_diff <= atol + rtol * max|reference|``.
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-4


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
    require_onnx_stack()
    paths = _ExportPaths.in_folder(Path(out_dir), name)
    spec = modality.input_spec() or {}
    if output_names is None:
        output_names = (OUTPUT_NAME if head is None else _output_name(head_name),)
    job = _ExportJob(encoder, modality, paths, spec, opset, atol, rtol, head, head_name, tuple(output_names))
    written = _write_and_verify(job, plugin_exporter, export_frontend)
    files = [str(f) for f in modality.write_export_files(paths.onnx.parent, job.input_names)]
    verification = verification_document(written.checks, atol, rtol)
    doc = _document(job, written, verification, files, name, modality_name, metadata or {}, document or {})
    write_metadata(paths.onnx, paths.metadata, doc)
    # Writing the metadata saved the file again: check what a deployer will load.
    check_onnx_model(paths.onnx)
    report = _report(job, written, verification, doc)
    if not report.passed and not allow_mismatch:
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


def _output_name(head_name: str) -> str:
    """The graph output's name for a head: the last dotted part of its name, as an identifier."""
    return re.sub(r"\W", "_", head_name.rsplit(".", 1)[-1]) or "head"


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


@dataclass(frozen=True)
class _ExportJob:
    """What one :func:`export_encoder` call exports, where to, and the tolerances it is judged by."""

    encoder: Encoder
    modality: Modality
    paths: _ExportPaths
    spec: Mapping[str, Any]
    opset: int
    atol: float
    rtol: float
    head: nn.Module | None
    head_name: str | None
    output_names: tuple[str, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        """The encoder's inputs, in the order the graph takes them."""
        return tuple(self.encoder.input_names)


@dataclass
class _Traced:
    """What :func:`_trace` traced the file from and wrote."""

    example: dict[str, Tensor]
    axes: dict[str, dict[int, str]]
    feature_dim: int
    written_by: str
    data_path: Path | None


@dataclass
class _Written:
    """What :func:`_write_and_verify` wrote and measured."""

    traced: _Traced
    opset: int
    checks: list[dict[str, Any]]
    frontend: dict[str, Any] | None


def _write_and_verify(job: _ExportJob, plugin_exporter: PluginExporter | None, export_frontend: bool) -> _Written:
    """Trace, write and check ``paths.onnx`` (and the front end), then measure it against PyTorch."""
    with export_module_on_cpu(job.encoder, job.head) as (cpu_encoder, module):
        traced = _trace(job, cpu_encoder, module, plugin_exporter)
        opset = written_opset(job.paths.onnx, job.opset, traced.written_by)
        checks = verify_against_pytorch(
            module, job.modality, job.paths.onnx, job.input_names, traced.example, traced.axes, job.encoder,
            job.head_name, job.output_names,
        )  # fmt: skip
        frontend = _export_frontend(job, module, opset) if export_frontend else None
    return _Written(traced, opset, checks, frontend)


def _trace(job: _ExportJob, cpu_encoder: Encoder, module: nn.Module, plugin_exporter: PluginExporter | None) -> _Traced:
    """Write ``paths.onnx`` from example inputs, give its dynamic axes their names and check it."""
    example = example_encoder_inputs(job.modality, job.input_names, TRACE_BATCH_SIZE, seed=0)
    axes = input_dynamic_axes(job.spec.get("dynamic_axes") or {}, example)
    with torch.inference_mode():
        outputs = module(*example.values())
    reference = check_export_output(outputs, job.encoder, TRACE_BATCH_SIZE, job.head_name, len(job.output_names))
    written_by = write_onnx(
        cpu_encoder, module, example, axes, job.paths.onnx, job.opset, job.output_names, plugin_exporter,
        with_head=job.head is not None,
    )  # fmt: skip
    # Exporters restore the training flag of the module they were handed, which for a
    # fresh export_module() wrapper is True: make sure PyTorch is compared in eval mode.
    cpu_encoder.eval()
    module.eval()
    data_path = name_dynamic_axes(job.paths.onnx, job.input_names, axes, len(job.output_names))
    check_onnx_model(job.paths.onnx)
    return _Traced(example, axes, int(reference[0].shape[1]), written_by, data_path)


def _export_frontend(job: _ExportJob, module: nn.Module, opset: int) -> dict[str, Any] | None:
    """The modality's front end, written beside the model and checked through it; its metadata entry."""
    # Imported here: frontend_export builds on this module.
    from sslhub.frontend_export import export_frontend

    # The front end is checked end to end through the first (primary) output.
    primary = module if len(job.output_names) == 1 else FirstOutput(module)
    return export_frontend(
        job.modality, job.paths.frontend, job.input_names, opset, primary, job.paths.onnx, job.atol, rtol=job.rtol
    )


def _document(
    job: _ExportJob,
    written: _Written,
    verification: dict[str, Any],
    files: Sequence[str],
    name: str,
    modality_name: str | None,
    extra: Mapping[str, Any],
    document: Mapping[str, Any],
) -> dict[str, Any]:
    """The metadata document of the export, with the caller's ``document`` keys on top."""
    traced = written.traced
    doc = metadata_document(
        encoder=job.encoder,
        modality=job.modality,
        modality_name=modality_name,
        spec=job.spec,
        example=traced.example,
        axes=traced.axes,
        feature_dim=traced.feature_dim,
        opset=written.opset,
        requested_opset=job.opset,
        name=name,
        verification=verification,
        extra=extra,
        output_name=job.output_names[0],
        head_name=job.head_name,
        exported_by=traced.written_by,
        frontend=written.frontend,
        files=files,
    )
    doc.update(to_jsonable(dict(document)))
    return doc


def _report(job: _ExportJob, written: _Written, verification: Mapping[str, Any], doc: dict[str, Any]) -> ExportReport:
    """The report of a finished export: its files, figures and verdict."""
    return ExportReport(
        path=job.paths.onnx,
        metadata_path=job.paths.metadata,
        opset=written.opset,
        checks=written.checks,
        max_abs_diff=verification["max_abs_diff"],
        max_rel_diff=verification["max_rel_diff"],
        atol=job.atol,
        passed=verification["passed"],
        data_path=written.traced.data_path,
        metadata=doc,
        rtol=job.rtol,
        requested_opset=job.opset,
    )


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
