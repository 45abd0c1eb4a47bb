"""Verifying an exported ONNX file: onnxruntime against PyTorch on inputs of shapes it was not traced with.

Each case is a batch size (and lengths of the other dynamic axes) with its own fresh inputs;
its figures are the largest absolute and relative differences of every output, judged by
:data:`TOLERANCE_RULE`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sslhub.components import Encoder, Modality
from sslhub.export_error import ExportError
from sslhub.export_module import check_export_output, example_encoder_inputs

#: Batch sizes the exported model is verified at (1 catches graphs specialised to the trace size).
VERIFY_BATCH_SIZES = (1, 5)
#: Fractions of the traced length used to verify the other dynamic axes (sequence, time).
VERIFY_LENGTH_FRACTIONS = (0.75, 0.5)
#: How every case is judged, in the words the metadata's ``verification.rule`` records.
TOLERANCE_RULE = "max_abs_diff <= atol + rtol * reference_max_abs, in every case"


def verification_cases(
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


def shorten_inputs(
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


def verify_against_pytorch(
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
    for case, (batch_size, lengths) in enumerate(verification_cases(axes, example)):
        fresh = example_encoder_inputs(modality, input_names, batch_size, seed=1000 + case)
        inputs = shorten_inputs(fresh, axes, lengths)
        sizes: dict[str, int] = {}
        for input_name, input_axes in axes.items():
            for axis, axis_name in input_axes.items():
                sizes[axis_name] = int(inputs[input_name].shape[axis])
        with torch.inference_mode():
            expected = check_export_output(module(*inputs.values()), encoder, batch_size, head_name, len(names))
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
