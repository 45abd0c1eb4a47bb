"""Exports besides ONNX: the encoder's weights as safetensors, and its library's native format.

``sslhub export RUN_DIR --format onnx,safetensors,native`` writes into one export folder
(``RUN_DIR/onnx`` by default; ``KEY/`` below it for each encoder of a run with several):

- ``encoder.safetensors``: the encoder's ``state_dict()`` (``safetensors`` format), for every
  encoder;
- ``encoder.json``: what :func:`sslhub.load_encoder` needs to rebuild the encoder without the
  run directory (its registered name and parameters, the modality's facts and preprocessing)
  and the formats written;
- the modality's files for deployers (``tokenizer.json`` for text);
- ``native/``: what :meth:`sslhub.Encoder.export_native` wrote (timm weights, a transformers
  ``save_pretrained`` folder, a torchaudio state dict), when the encoder knows such a format.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sslhub.components import DEFAULT_ENCODER_KEY, Encoder, EncoderSet, Modality
from sslhub.errors import SSLHubError

log = logging.getLogger("sslhub")

#: every value ``sslhub export --format`` accepts, in the order they are written.
EXPORT_FORMATS = ("onnx", "safetensors", "native")
WEIGHTS_FILE = "encoder.safetensors"
RECORD_FILE = "encoder.json"
NATIVE_DIR = "native"
#: ``encoder.json``'s ``format``: what :func:`sslhub.load_encoder` checks before reading it.
RECORD_FORMAT = {"name": "sslhub-encoder", "version": 1}


def parse_formats(text: str) -> tuple[str, ...]:
    """``"onnx,native"`` -> ``("onnx", "native")``; native needs the weights, so it adds safetensors.

    Raises:
        SSLHubError: an empty list or a name outside :data:`EXPORT_FORMATS`.
    """
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in EXPORT_FORMATS]
    if unknown or not names:
        raise SSLHubError(
            f"--format {text!r}: unknown format(s) {unknown or '(none given)'}; "
            f"choose a comma list of {', '.join(EXPORT_FORMATS)}"
        )
    if "native" in names:
        names.append("safetensors")
    return tuple(f for f in EXPORT_FORMATS if f in names)


@dataclass(frozen=True)
class EncoderDescription:
    """How to rebuild one encoder without its run: the registry name and parameters, and the modality's facts.

    Attributes:
        name: the encoder's registered name (``timm``, ``hf``...).
        params: its validated parameters, as JSON.
        modality_name: the recipe's ``data.modality``.
        seed: the recipe seed.
    """

    name: str
    params: Mapping[str, Any]
    modality_name: str
    seed: int


def write_weight_formats(
    encoders: EncoderSet,
    modality: Modality,
    descriptions: Mapping[str, EncoderDescription],
    out_dir: Path,
    formats: Sequence[str],
) -> dict[str, Any]:
    """Write ``safetensors`` (and ``native``) exports of each encoder; ``out_dir/KEY`` for named keys.

    Returns:
        ``{KEY, or "encoder" for the default key: {path, files, native, formats, summary}}``.
    """
    results: dict[str, Any] = {}
    for key, encoder in encoders.items():
        own_key = None if key == DEFAULT_ENCODER_KEY else key
        folder = Path(out_dir) if own_key is None else Path(out_dir) / own_key
        results[own_key or "encoder"] = _write_one(encoder, modality, descriptions[key], folder, formats, key)
    return results


def _write_one(
    encoder: Encoder,
    modality: Modality,
    description: EncoderDescription,
    folder: Path,
    formats: Sequence[str],
    key: str,
) -> dict[str, Any]:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    device = next(iter(encoder.state_dict().values()), torch.empty(0)).device
    was_training = encoder.training
    encoder.to("cpu").eval()
    try:
        save_file(weights_of(encoder), str(folder / WEIGHTS_FILE))
        files = [WEIGHTS_FILE, *modality.write_export_files(folder, list(encoder.input_names))]
        # Always rewritten: a native/ left by an earlier export would hold other weights.
        native = _write_native(encoder, modality, folder / NATIVE_DIR, write="native" in formats)
    finally:
        encoder.to(device).train(was_training)
    record = {
        "format": RECORD_FORMAT,
        "encoder": {"name": description.name, "params": dict(description.params)},
        "encoder_key": key,
        "modality": {
            "name": description.modality_name,
            "info": _json_ready(modality.info().as_dict()),
            "input_spec": _json_ready(modality.input_spec()),
        },
        "seed": description.seed,
        "input_names": list(encoder.input_names),
        "feature_dim": int(encoder.feature_dim),
        "formats": [f for f in formats if f != "native"] + (["native"] if native else []),
        "files": files,
        "native": native,
    }
    (folder / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    summary = f"{key}: wrote {folder / WEIGHTS_FILE}" + (
        f" and {folder / NATIVE_DIR}/ ({', '.join(native)})" if native else ""
    )
    return {"path": str(folder), "files": files, "native": native, "formats": record["formats"], "summary": summary}


def _write_native(encoder: Encoder, modality: Modality, directory: Path, write: bool) -> dict[str, str]:
    """The encoder's :meth:`~sslhub.Encoder.export_native` into a fresh ``directory`` (removed when empty)."""
    if directory.exists():
        shutil.rmtree(directory)
    if not write:
        return {}
    directory.mkdir(parents=True)
    written = dict(encoder.export_native(directory, modality) or {})
    if not written:
        shutil.rmtree(directory)
        log.info("%s has no native format; wrote safetensors only", type(encoder).__name__)
    return written


def weights_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` ready for safetensors: contiguous CPU tensors, shared storage copied apart.

    safetensors refuses tensors that share memory (tied embeddings); each key gets its own copy,
    and loading with ``load_state_dict`` ties them again.
    """
    seen: set[int] = set()
    weights = {}
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu()
        pointer = tensor.untyped_storage().data_ptr() if tensor.numel() else -1
        weights[name] = tensor.clone().contiguous() if pointer in seen else tensor.contiguous()
        seen.add(pointer)
    return weights


def _json_ready(value: Any) -> Any:
    """``value`` with tuples as lists, numbers as numbers and anything else as text (info() may hold paths)."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)
