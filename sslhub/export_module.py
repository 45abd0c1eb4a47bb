"""The PyTorch side of an export: the module that is traced, and the reference the ONNX file must match.

That is the encoder's ``export_module()`` on the CPU in float32 eval mode (with an objective's
head on top), the modality's example inputs it is fed, their dynamic axes, and the check that
it returns ``[batch, width]`` floating-point tensors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sslhub.components import Encoder, Modality
from sslhub.export_error import ExportError


@contextlib.contextmanager
def export_module_on_cpu(encoder: Encoder, head: nn.Module | None) -> Iterator[tuple[Encoder, nn.Module]]:
    """``(encoder, its export module with head on top)`` on the CPU in float32 eval mode, for the block.

    The encoder yielded is the one exporters are handed: the caller's own or a copy (see
    :func:`cpu_float32_eval`); the caller's training modes are restored afterwards.
    """
    cpu_encoder, restore = cpu_float32_eval(encoder)
    cpu_head, restore_head = cpu_float32_eval(head) if head is not None else (None, lambda: None)
    try:
        module = cpu_encoder.export_module().eval()
        if cpu_head is not None:
            module = _WithHead(module, cpu_head).eval()
        yield cpu_encoder, module
    finally:
        restore()
        restore_head()


def cpu_float32_eval(encoder: Encoder) -> tuple[Encoder, Any]:
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


class _WithHead(nn.Module):
    """``head(encoder_export(*inputs))``: the pooled embedding passed through an objective's head."""

    def __init__(self, pooled: nn.Module, head: nn.Module):
        super().__init__()
        self.pooled = pooled
        self.head = head

    def forward(self, *inputs: Tensor) -> Any:
        return self.head(self.pooled(*inputs))


class FirstOutput(nn.Module):
    """The first of a module's outputs: what the front end's end-to-end check compares."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.module(*inputs)[0]


def example_encoder_inputs(
    modality: Modality, input_names: Sequence[str], batch_size: int, seed: int
) -> dict[str, Tensor]:
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


def input_dynamic_axes(
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


def check_export_output(
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
