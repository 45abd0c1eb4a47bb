"""The VQ tokenizer export: encoder + projection + codebook lookup as one ONNX model giving integer codes.

``vq_tokenizer.onnx`` takes the encoder's inputs (``image [batch, C, H, W]`` float, as the
encoder export does) and returns ``codes``: int64 ``[batch, h, w]`` for a spatial code grid,
``[batch, T']`` for frames, ``[batch]`` for one pooled code. It is checked like the encoder
export: onnxruntime and PyTorch run on fresh inputs of another batch size and must give the
same codes, except where two codes are equally near (a float tie, which either side may break).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from sslhub import Encoder, Modality
from sslhub_autoencoder.quantizer import nearest_codes

if TYPE_CHECKING:
    from sslhub_autoencoder.objectives.vq_vae import VQVAEObjective

#: relative difference of two codes' distances under which a disagreement counts as a tie
TIE_TOLERANCE = 1e-4


class VQTokenizer(nn.Module):
    """``inputs -> codes``: the encoder's features, the pre-quantisation projection, the nearest code."""

    def __init__(self, objective: VQVAEObjective, encoder: Encoder):
        super().__init__()
        self.encoder, self.project = encoder, objective.project
        self.decode_from, self.channel_axis = objective.decode_from, objective.channel_axis
        self.register_buffer("codebook", objective.quantizer.codebook.detach().clone())

    def vectors(self, *inputs: Tensor) -> Tensor:
        """Pre-quantisation vectors ``[..., D]`` of the encoder inputs (in ``encoder.input_names`` order)."""
        features = getattr(self.encoder(dict(zip(self.encoder.input_names, inputs, strict=True))), self.decode_from)
        if self.channel_axis == 1:
            features = features.movedim(1, -1)
        return self.project(features).float()

    def forward(self, *inputs: Tensor) -> Tensor:
        vectors = self.vectors(*inputs)
        return nearest_codes(vectors.reshape(-1, vectors.shape[-1]), self.codebook).view(vectors.shape[:-1])


def export_vq_tokenizer(
    objective: VQVAEObjective, encoder: Encoder, modality: Modality, path: Path, opset: int = 18
) -> dict[str, Any]:
    """Write ``path`` (and ``<path>.json`` describing it) and check it in onnxruntime.

    Returns:
        ``{path, opset, output_shape, checks: [{batch_size, codes, disagreements, ties}], passed}``;
        or ``{error}`` when onnx/onnxruntime are missing or the exporter fails (the run goes on).
    """
    try:
        import onnxruntime
    except ImportError as error:
        return {"error": f"onnxruntime is not installed ({error}); pip install onnxruntime onnx onnxscript"}
    device = next(objective.parameters()).device
    tokenizer = VQTokenizer(objective, encoder).to("cpu").eval()
    names = list(encoder.input_names)
    try:
        example = _inputs(modality, names, 2, seed=0)
        batch = torch.export.Dim("batch", min=1)
        shapes = (tuple({0: batch} for _ in names),)  # forward(*inputs): one entry for the varargs
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                tokenizer,
                tuple(example.values()),
                str(path),
                dynamo=True,
                dynamic_shapes=shapes,
                opset_version=opset,
                external_data=False,  # one self-contained file: the tokenizer is small
                input_names=names,
                output_names=["codes"],
                verbose=False,
            )
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        checks = [_check(tokenizer, session, _inputs(modality, names, size, seed=100 + size)) for size in (3, 1)]
    except Exception as error:  # noqa: BLE001 - the report says why; training already succeeded
        return {"error": f"VQ tokenizer export failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}"}
    finally:
        encoder.to(device), objective.to(device)
    with torch.no_grad():
        shape = list(tokenizer(*example.values()).shape)
    result = {
        "path": str(path),
        "opset": opset,
        "inputs": names,
        "output": "codes",
        "output_shape": ["batch", *shape[1:]],
        "codebook_size": int(tokenizer.codebook.shape[0]),
        "checks": checks,
        "passed": all(c["disagreements"] == c["ties"] for c in checks),
    }
    Path(f"{path}.json").write_text(json.dumps(result, indent=2))
    return result


def _inputs(modality: Modality, names: list[str], batch_size: int, seed: int) -> dict[str, Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        batch = dict(modality.example_batch(batch_size, device="cpu"))
        if any(n not in batch for n in names):
            batch = dict(modality.on_device(batch))
    return {n: batch[n].float() if batch[n].is_floating_point() else batch[n] for n in names}


def _check(tokenizer: VQTokenizer, session: Any, inputs: dict[str, Tensor]) -> dict[str, Any]:
    (actual,) = session.run(["codes"], {n: t.numpy() for n, t in inputs.items()})
    with torch.no_grad():
        expected = tokenizer(*inputs.values())
        vectors = tokenizer.vectors(*inputs.values()).reshape(-1, tokenizer.codebook.shape[1])
    actual_codes = torch.from_numpy(actual).reshape(-1).long()
    expected_codes = expected.reshape(-1)
    differ = actual_codes != expected_codes
    ties = 0
    if bool(differ.any()):
        codebook = tokenizer.codebook
        near = (vectors - codebook[expected_codes]).square().sum(1)
        other = (vectors - codebook[actual_codes]).square().sum(1)
        tie = (other - near).abs() <= TIE_TOLERANCE * (1 + near)
        ties = int((differ & tie).sum())
    return {
        "batch_size": int(next(iter(inputs.values())).shape[0]),
        "codes": int(expected_codes.numel()),
        "disagreements": int(differ.sum()),
        "ties": ties,
    }
