"""Tiny ONNX models written with ``onnx.helper`` (no torch), with sslhub metadata, for decoder tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper


def mean_model(path: Path, inputs: Mapping[str, int], metadata: Mapping[str, Any]) -> Path:
    """A model summing its inputs (cast to float) and averaging over axis 1: ``[B, N(, C)] -> [B, C or 1]``.

    Args:
        path: the ``.onnx`` file to write (its folder is created).
        inputs: input name -> rank (2: ``[B, N]`` int64, giving ``[B, 1]``; 3: ``[B, N, 3]`` float32, giving ``[B, 3]``).
        metadata: stored as ``sslhub.KEY`` metadata properties, as sslhub export writes them.
    """
    rank = next(iter(inputs.values()))
    dtype = TensorProto.INT64 if rank == 2 else TensorProto.FLOAT
    shape = ["batch", "n"] if rank == 2 else ["batch", "n", 3]
    graph_inputs = [helper.make_tensor_value_info(name, dtype, shape) for name in inputs]
    nodes = [helper.make_node("Cast", [name], [f"{name}_float"], to=TensorProto.FLOAT) for name in inputs]
    total = f"{next(iter(inputs))}_float"
    for index, name in enumerate(list(inputs)[1:]):
        nodes.append(helper.make_node("Add", [total, f"{name}_float"], [f"sum{index}"]))
        total = f"sum{index}"
    nodes.append(helper.make_node("ReduceMean", [total], ["embedding"], axes=[1], keepdims=int(rank == 2)))
    width = 1 if rank == 2 else 3
    output = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", width])
    model = helper.make_model(
        helper.make_graph(nodes, "mean", graph_inputs, [output]), opset_imports=[helper.make_opsetid("", 13)]
    )
    model.ir_version = 8
    for key, value in {"feature_dim": width, **metadata}.items():
        model.metadata_props.add(key=f"sslhub.{key}", value=json.dumps(value))
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
