"""The metadata document of an exported model: what a deployer needs to feed it and to read its output.

It is stored twice, with the same content: in the ONNX file's ``metadata_props`` and as a JSON
file beside it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sslhub.components import Encoder, Modality

#: Where the metadata lives inside the ONNX file: ``metadata_props`` keys ``sslhub.<key>``,
#: each value a JSON string; ``metadata.json`` holds the same dictionary.
METADATA_PREFIX = "sslhub."
METADATA_FORMAT = "sslhub-onnx-encoder"
METADATA_FORMAT_VERSION = 1


def to_jsonable(value: Any) -> Any:
    """``value`` made JSON-serialisable: tuples to lists, numpy/torch scalars to numbers, the rest to str."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic | np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if hasattr(value, "model_dump"):  # pydantic models (a resolved recipe)
        return to_jsonable(value.model_dump(mode="json"))
    return str(value)


def _versions() -> dict[str, str]:
    versions = {"torch": torch.__version__}
    for package in ("onnx", "onnxscript", "onnxruntime", "sslhub"):
        with contextlib.suppress(Exception):
            versions[package] = str(importlib.import_module(package).__version__)
    return versions


def metadata_document(
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
    output_name: str,
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
    return to_jsonable(
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


def write_metadata(onnx_path: Path, metadata_path: Path, doc: Mapping[str, Any]) -> None:
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
