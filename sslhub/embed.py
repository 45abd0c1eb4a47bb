"""Run an encoder exported by :func:`sslhub.export.export_encoder` with onnxruntime alone.

Needs only ``onnxruntime`` and ``numpy`` (and ``onnx`` to read the metadata): no torch, no
plugins. Inputs are arrays already shaped and preprocessed like the model's inputs (the
metadata's ``input_spec`` says names, dtypes, axes and preprocessing constants); turning
files (images, text, audio) into those arrays is modality-specific and belongs to the
modality's plugin.

Example::

    model = ExportedEncoder("runs/image-simclr/export")
    vectors = model.embed({"image": images})   # images: float32 [N, 3, 32, 32] -> [N, D]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sslhub.files import check_external_data

INSTALL_HINT = "pip install onnx onnxruntime"


def find_model_file(model_dir: Path | str, name: str | None = None) -> Path:
    """The ``.onnx`` file in ``model_dir`` (or ``model_dir`` itself if it is one).

    Args:
        model_dir: an export folder, or a path to the ``.onnx`` file.
        name: file stem to pick when the folder holds several models; by default
            ``model.onnx``, or the only ``.onnx`` file present.

    Raises:
        FileNotFoundError: no (or no unambiguous) model file, with what the folder holds.
    """
    path = Path(model_dir)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: pass the folder sslhub export wrote, or its .onnx file")
    if name is not None:
        candidate = path / f"{name}.onnx"
        if not candidate.is_file():
            raise FileNotFoundError(
                f"{candidate} does not exist; {path} holds {sorted(p.name for p in path.glob('*.onnx'))}"
            )
        return candidate
    if (path / "model.onnx").is_file():
        return path / "model.onnx"
    found = sorted(path.glob("*.onnx"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"{path} holds no .onnx file: export a run first (sslhub export RUN_DIR)")
    raise FileNotFoundError(f"{path} holds several models {[p.stem for p in found]}: pass name=")


def make_session(onnx_path: Path | str, providers: Sequence[str] | None = None, threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` on ``providers`` (CPU by default), quiet unless it fails.

    Args:
        onnx_path: the model file; external weights are found relative to it.
        providers: execution providers, in order of preference.
        threads: intra-op threads (``None``: onnxruntime's default, all cores).
    """
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise ImportError(f"running an exported model needs onnxruntime: {INSTALL_HINT}") from error
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the shape-inference warnings are noise for users
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(
        str(onnx_path), sess_options=options, providers=list(providers or ["CPUExecutionProvider"])
    )


def read_exported_metadata(onnx_path: Path | str) -> dict[str, Any]:
    """The sslhub metadata of an exported model: from the ONNX file, else the JSON beside it."""
    onnx_path = Path(onnx_path)
    try:
        import onnx

        model = onnx.load(str(onnx_path), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props if p.key.startswith("sslhub.")}
        if props:
            return {k.removeprefix("sslhub."): json.loads(v) for k, v in props.items()}
    except ImportError:
        pass
    stem = onnx_path.stem
    for candidate in (onnx_path.with_name(f"{stem}.metadata.json"), onnx_path.with_name("metadata.json")):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return {}


class ExportedEncoder:
    """An exported encoder loaded in onnxruntime, with its metadata.

    Attributes:
        path: the ``.onnx`` file.
        session: the ``onnxruntime.InferenceSession``.
        metadata: the sslhub metadata (``input_spec``, ``output``, ``feature_dim``, ...).
        input_names: the graph's input names, in order.
        output: the graph output :meth:`run` and :meth:`embed` return (by default the first;
            a classifier's are ``logits`` and ``probabilities``).
    """

    def __init__(
        self,
        model_dir: Path | str,
        *,
        name: str | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        output: str | None = None,
    ):
        self.path = find_model_file(model_dir, name)
        check_external_data(self.path)  # the graph names its weight files: none may lie outside the folder
        self.session = make_session(self.path, providers, threads)
        self.metadata = read_exported_metadata(self.path)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._ranks = {i.name: len(i.shape) for i in self.session.get_inputs()}
        self._dtypes = {i.name: _ort_dtype(i.type) for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if output is not None and output not in outputs:
            raise ValueError(f"{self.path} has no output {output!r}; its outputs are {outputs}")
        self.output = output or outputs[0]

    @property
    def feature_dim(self) -> int | None:
        """Size of one embedding, from the metadata (``None`` if the file has none)."""
        return self.metadata.get("feature_dim")

    def _feeds(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            expected = ", ".join(f"{n} ({self._dtypes[n]}, rank {self._ranks[n]})" for n in self.input_names)
            raise ValueError(f"missing inputs {missing}: the model takes {expected}")
        feeds = {}
        for name in self.input_names:
            array = np.asarray(inputs[name])
            dtype = self._dtypes[name]
            if array.dtype != dtype:
                if not np.can_cast(array.dtype, dtype, casting="same_kind"):
                    raise ValueError(f"input '{name}' is {array.dtype}, the model takes {dtype}")
                array = array.astype(dtype)
            if array.ndim != self._ranks[name]:
                raise ValueError(
                    f"input '{name}' has shape {list(array.shape)}, the model takes rank {self._ranks[name]}"
                )
            feeds[name] = np.ascontiguousarray(array)
        sizes = {n: a.shape[0] for n, a in feeds.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"inputs disagree on the batch size (axis 0): {sizes}")
        return feeds

    def run(self, inputs: Mapping[str, Any]) -> np.ndarray:
        """Embeddings ``[B, D]`` float32 for one batch of inputs (extra keys such as ``label`` are ignored)."""
        (output,) = self.session.run([self.output], self._feeds(inputs))
        return output

    def embed(self, inputs: Mapping[str, Any], batch_size: int = 256) -> np.ndarray:
        """Embeddings ``[N, D]`` for ``N`` samples, run ``batch_size`` at a time."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        feeds = self._feeds(inputs)
        total = next(iter(feeds.values())).shape[0]
        if total == 0:
            return np.zeros((0, self.feature_dim or 0), dtype=np.float32)
        parts = [
            self.session.run([self.output], {n: a[start : start + batch_size] for n, a in feeds.items()})[0]
            for start in range(0, total, batch_size)
        ]
        return np.concatenate(parts, axis=0)


def _ort_dtype(type_string: str) -> np.dtype:
    """numpy dtype of an onnxruntime type string such as ``tensor(float)``."""
    names = {
        "float": "float32",
        "double": "float64",
        "float16": "float16",
        "int64": "int64",
        "int32": "int32",
        "int16": "int16",
        "int8": "int8",
        "uint8": "uint8",
        "bool": "bool",
    }
    inner = type_string.removeprefix("tensor(").removesuffix(")")
    return np.dtype(names.get(inner, inner))


def load_exported(model_dir: Path | str, *, name: str | None = None) -> tuple[Any, dict[str, Any]]:
    """``(onnxruntime.InferenceSession, metadata)`` for an export folder (or ``.onnx`` file)."""
    model = ExportedEncoder(model_dir, name=name)
    return model.session, model.metadata


def run_exported(model_dir: Path | str, inputs: Mapping[str, Any], *, name: str | None = None) -> np.ndarray:
    """Embeddings ``[B, D]`` of one batch: loads the model, runs it once (use :class:`ExportedEncoder` to reuse)."""
    return ExportedEncoder(model_dir, name=name).run(inputs)


def embed_arrays(
    model_dir: Path | str, inputs: Mapping[str, Any], *, batch_size: int = 256, name: str | None = None
) -> np.ndarray:
    """Embeddings ``[N, D]`` of ``N`` preprocessed samples, ``batch_size`` at a time."""
    return ExportedEncoder(model_dir, name=name).embed(inputs, batch_size=batch_size)
