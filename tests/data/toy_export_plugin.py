"""A plugin taking over the ONNX export of the toy encoder through ``sslhub_export_encoder``.

With ``TOY_EXPORT_FAIL=1`` in the environment the hook raises instead, to test the error.
"""

from __future__ import annotations

import os

import torch

from sslhub import hookimpl


@hookimpl
def sslhub_export_encoder(encoder, example_inputs, dynamic_axes, out_path, opset):
    if type(encoder).__name__ != "ToyMlp":
        return None
    if os.environ.get("TOY_EXPORT_FAIL") == "1":
        raise RuntimeError("toy exporter refuses on purpose")
    # The TorchScript exporter, which takes ONNX-style dynamic_axes directly.
    torch.onnx.export(
        encoder.export_module().eval(),
        example_inputs,
        str(out_path),
        dynamo=False,
        opset_version=opset,
        input_names=list(encoder.input_names),
        output_names=["pooled"],
        dynamic_axes={name: dict(axes) for name, axes in dynamic_axes.items()},
    )
    return True
