"""Export a modality's front end (raw input to encoder input, e.g. waveform to log-mel) beside the encoder.

The front end is optional for a deployer: the encoder model takes the front end's outputs,
so a deployer either computes them as the metadata describes or runs ``frontend.onnx``
first. Failing to capture the front end therefore never fails the export; the metadata
says why it is missing.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sslhub.components import ExportFrontend, Modality
from sslhub.export import DEFAULT_RTOL
from sslhub.export_verify import VERIFY_BATCH_SIZES, VERIFY_LENGTH_FRACTIONS, output_differences
from sslhub.onnx_trace import dynamo_export, exporter_output_to, read_opset, summarize_export_exception


def export_frontend(
    modality: Modality,
    out_path: Path,
    encoder_inputs: Sequence[str],
    opset: int,
    model: torch.nn.Module,
    model_path: Path,
    atol: float,
    rtol: float = DEFAULT_RTOL,
) -> dict[str, Any] | None:
    """Export ``modality.export_frontend()`` to ``out_path`` and verify it; describe the result.

    Two checks, on random raw inputs of untraced sizes: the front end's own outputs against
    PyTorch (within the front end's ``atol``: logs of tiny spectrogram powers amplify float32
    rounding), and the chain ``frontend.onnx`` then ``model_path`` against ``model`` on the
    PyTorch front end's outputs (within the encoder's ``atol``), which is what a deployer gets.
    Both tolerances also grow by ``rtol`` times the case's largest output magnitude.

    Args:
        model: the exported PyTorch module (encoder inputs positionally -> embedding).
        model_path: the verified encoder ONNX file.
        atol: the encoder export's absolute tolerance, applied to the chain.
        rtol: the relative tolerance, applied to both checks.

    Returns:
        ``None`` when the modality has no front end. Otherwise a JSON-ready dictionary: ``file``,
        ``exported`` (bool), ``input_names``, ``output_names``, ``description`` and either the
        verification (``opset``, ``atol``, ``rtol``, ``max_abs_diff``, ``max_rel_diff``,
        ``end_to_end_atol``, ``end_to_end_max_abs_diff``, ``end_to_end_max_rel_diff``, ``checks``)
        or the ``reason`` it is missing.
    """
    frontend = modality.export_frontend()
    if frontend is None:
        return None
    described: dict[str, Any] = {
        "file": out_path.name,
        "input_names": list(frontend.input_names),
        "output_names": list(frontend.output_names),
        "description": frontend.description,
        "dynamic_axes": {n: {str(a): v for a, v in axes.items()} for n, axes in frontend.dynamic_axes.items()},
    }
    unknown = [n for n in frontend.output_names if n not in encoder_inputs]
    if unknown:
        return {**described, "exported": False, "reason": f"its outputs {unknown} are not encoder inputs"}
    module = frontend.module.cpu().float().eval()
    try:
        _write(frontend, module, out_path, opset)
        checks = _verify(frontend, module, out_path, model, model_path, encoder_inputs)
    except Exception as error:  # the exporter raises many kinds; any of them means "not captured"
        out_path.unlink(missing_ok=True)
        Path(f"{out_path}.data").unlink(missing_ok=True)
        reason = summarize_export_exception(error, max_lines=2).replace("\n", " ")
        warnings.warn(f"the {', '.join(frontend.input_names)} front end was not exported: {reason}", stacklevel=2)
        return {**described, "exported": False, "reason": reason}
    verification = _judge(checks, frontend.atol, atol, rtol)
    verification["opset"] = read_opset(out_path)
    if not verification.pop("passed"):
        out_path.unlink(missing_ok=True)
        reason = (
            f"onnxruntime differs from PyTorch by {verification['max_abs_diff']:.3g} on the features "
            f"(relative {verification['max_rel_diff']:.3g}; atol {frontend.atol:g} + rtol {rtol:g} x max|features|) "
            f"and by {verification['end_to_end_max_abs_diff']:.3g} on the embeddings "
            f"(relative {verification['end_to_end_max_rel_diff']:.3g}; atol {atol:g} + rtol {rtol:g} x max|embedding|)"
        )
        warnings.warn(f"the front end was not kept: {reason}", stacklevel=2)
        return {**described, "exported": False, "reason": reason, **verification}
    return {**described, "exported": True, **verification}


def _judge(checks: list[dict[str, Any]], features_atol: float, atol: float, rtol: float) -> dict[str, Any]:
    """The verification summary; each check gets its two tolerances (``atol + rtol * max|reference|``)."""
    passed = True
    for check in checks:
        for output in check["outputs"].values():  # each front-end output against its own magnitude
            output["tolerance"] = features_atol + rtol * output["reference_max_abs"]
            output["passed"] = bool(output["max_abs_diff"] <= output["tolerance"])
        check["end_to_end_tolerance"] = atol + rtol * check["end_to_end_reference_max_abs"]
        check["passed"] = bool(
            all(o["passed"] for o in check["outputs"].values())
            and check["end_to_end_max_abs_diff"] <= check["end_to_end_tolerance"]
        )
        passed = passed and check["passed"]
    return {
        "atol": features_atol,
        "rtol": rtol,
        "max_abs_diff": max(c["max_abs_diff"] for c in checks),
        "max_rel_diff": max(c["max_rel_diff"] for c in checks),
        "end_to_end_atol": atol,
        "end_to_end_max_abs_diff": max(c["end_to_end_max_abs_diff"] for c in checks),
        "end_to_end_max_rel_diff": max(c["end_to_end_max_rel_diff"] for c in checks),
        "checks": checks,
        "passed": passed,
    }


def _write(frontend: ExportFrontend, module: torch.nn.Module, out_path: Path, opset: int) -> None:
    args = tuple(frontend.example[n].detach().cpu().float() for n in frontend.input_names)
    axes = {n: dict(frontend.dynamic_axes.get(n) or {0: "batch"}) for n in frontend.input_names}
    with exporter_output_to(io.StringIO()):
        wrapper = _Positional(module).eval()
        dynamo_export(
            wrapper, args, out_path, axes, opset, frontend.input_names, frontend.output_names, external_data=False
        )
    import onnx

    model = onnx.load(str(out_path))
    for value in model.graph.input:
        for axis, axis_name in axes.get(value.name, {}).items():
            value.type.tensor_type.shape.dim[axis].dim_param = axis_name
    for value in model.graph.output:
        for axis, axis_name in (frontend.output_axes.get(value.name) or {}).items():
            dims = value.type.tensor_type.shape.dim
            if axis < len(dims):
                dims[axis].dim_param = axis_name
    onnx.save_model(model, str(out_path))
    onnx.checker.check_model(str(out_path))


def _verify(
    frontend: ExportFrontend,
    module: torch.nn.Module,
    out_path: Path,
    model: torch.nn.Module,
    model_path: Path,
    encoder_inputs: Sequence[str],
) -> list[dict[str, Any]]:
    """onnxruntime against PyTorch on random inputs scaled like the example, at untraced sizes."""
    from sslhub.embed import make_session

    session = make_session(out_path)
    model_session = make_session(model_path)
    model_output = model_session.get_outputs()[0].name
    generator = torch.Generator().manual_seed(1234)
    checks = []
    cases = [(b, 1.0) for b in VERIFY_BATCH_SIZES] + [(VERIFY_BATCH_SIZES[-1], f) for f in VERIFY_LENGTH_FRACTIONS]
    for batch_size, fraction in cases:
        inputs = {}
        for name in frontend.input_names:
            example = frontend.example[name].detach().cpu().float()
            shape = list(example.shape)
            shape[0] = batch_size
            for axis in frontend.dynamic_axes.get(name, {}):
                if axis != 0:
                    shape[axis] = max(1, int(round(shape[axis] * fraction)))
            inputs[name] = torch.randn(shape, generator=generator) * example.std().clamp_min(1e-3)
        with torch.inference_mode():
            expected = module(*inputs.values())
            expected = (expected,) if isinstance(expected, Tensor) else tuple(expected)
            by_name = dict(zip(frontend.output_names, expected, strict=True))
            embedding = model(*(by_name[n] for n in encoder_inputs)).float().numpy()
        actual = session.run(list(frontend.output_names), {n: t.numpy() for n, t in inputs.items()})
        per_output = {
            name: output_differences(np.asarray(a), e.float().numpy())
            for name, a, e in zip(frontend.output_names, actual, expected, strict=True)
        }
        feeds = dict(zip(frontend.output_names, actual, strict=True))
        (chained,) = model_session.run([model_output], {n: feeds[n] for n in encoder_inputs})
        chain = output_differences(np.asarray(chained), embedding)
        checks.append(
            {
                "shapes": {n: list(t.shape) for n, t in inputs.items()},
                "outputs": per_output,
                **{key: max(d[key] for d in per_output.values()) for key in ("max_abs_diff", "max_rel_diff")},
                **{f"end_to_end_{key}": value for key, value in chain.items()},
            }
        )
    return checks


class _Positional(torch.nn.Module):
    """Wraps the front end so ``torch.export`` sees plain positional tensor arguments."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *inputs: Tensor) -> Any:
        return self.module(*inputs)
