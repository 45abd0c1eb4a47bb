"""Writing a PyTorch module to an ONNX file, and the fixes and checks the file needs before anything reads it.

The writer is a plugin's ``sslhub_export_encoder`` hook, the encoder's own ``export_onnx``, or
``torch.onnx.export(dynamo=True)`` with dynamic shapes built from named axes. The exporter prints
and warns a lot as it works; that output is kept for the error's ``details`` rather than shown.
The written file then gets the modality's axis names and must pass the ONNX checker.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sslhub.components import Encoder
from sslhub.export_error import ExportError

INSTALL_HINT = "pip install onnx onnxscript onnxruntime"
#: Opsets ``torch.onnx.export(dynamo=True)`` writes here: its operator library starts at 18 (asked
#: for less, it usually falls back to 18 without failing), and onnxscript's version converter
#: goes up to 25 (asked for more, the file claims 18 and onnxruntime refuses it).
MIN_ONNX_OPSET = 18
MAX_ONNX_OPSET = 25

#: ``(encoder, example_inputs, dynamic_axes, out_path, opset) -> plugin name or None``.
PluginExporter = Callable[[Encoder, tuple[Tensor, ...], dict[str, dict[int, str]], Path, int], "str | None"]

# Loggers that warn on every failed export, in words the exception already says better.
_NOISY_LOGGERS = ("torch.fx.experimental.symbolic_shapes", "torch._dynamo", "torch.export", "torch._export")
# Warnings the exporter emits on every export, which say nothing actionable to the user.
_NOISY_WARNINGS = (
    r".*axis name: .* will not be used.*",
    r".*isinstance\(treespec, LeafSpec\).*",
)


def require_onnx_stack() -> None:
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


# --- running the exporter ---------------------------------------------------------------------


def torch_export_dynamic_shapes(module: nn.Module, axes: Mapping[str, Mapping[int, str]]) -> tuple[Any, ...]:
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


def write_onnx(
    encoder: Encoder,
    module: nn.Module,
    example: Mapping[str, Tensor],
    axes: Mapping[str, Mapping[int, str]],
    onnx_path: Path,
    opset: int,
    output_names: Sequence[str],
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
                dynamo_export(module, args, onnx_path, axes, opset, list(example), output_names, external_data=True)
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
            f"ONNX export of {type(encoder).__name__} failed in {how}:\n{summarize_export_exception(error)}\n"
            f"Run with --debug for the full trace. {advice}",
            details=log.getvalue() + "".join(traceback.format_exception(error)),
        ) from error
    if not onnx_path.is_file():
        raise ExportError(f"{how} did not write {onnx_path}")
    return "export_onnx" if how.endswith(".export_onnx") else how


def dynamo_export(
    module: nn.Module,
    args: tuple[Tensor, ...],
    onnx_path: Path,
    axes: Mapping[str, Mapping[int, str]],
    opset: int,
    input_names: Sequence[str],
    output_names: Sequence[str],
    external_data: bool,
) -> None:
    """``torch.onnx.export(dynamo=True)`` of ``module`` with ``axes`` dynamic, after refusing an opset it cannot write."""
    check_opset(opset)
    torch.onnx.export(
        module,
        args,
        str(onnx_path),
        dynamo=True,
        dynamic_shapes=torch_export_dynamic_shapes(module, axes),
        opset_version=opset,
        external_data=external_data,
        input_names=list(input_names),
        output_names=list(output_names),
        verbose=False,
    )


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


def written_opset(onnx_path: Path, requested: int, written_by: str) -> int:
    """The opset ``onnx_path`` declares; a warning when the exporter wrote another than asked for."""
    written = read_opset(onnx_path)
    if written is None:
        raise ExportError(f"{onnx_path} declares no ai.onnx opset ({written_by} wrote it); it cannot be run")
    if written != requested:
        warnings.warn(
            f"opset {requested} was asked for, but {written_by} wrote opset {written}; the metadata records {written}",
            stacklevel=4,  # export_encoder's caller, who asked for the opset (tests/core/test_export.py checks it)
        )
    return written


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


def summarize_export_exception(error: BaseException, max_lines: int = 6) -> str:
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


def name_dynamic_axes(
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


def check_onnx_model(onnx_path: Path) -> None:
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
