"""Files and texts to an encoder's input arrays, as ``sslhub embed`` makes them, for PyTorch use.

:class:`InputPreprocessor` decodes through the same :class:`sslhub.decoding.InputDecoder` as
``sslhub embed`` (the modality plugins' file decoders), so ``load_encoder(...).preprocess`` and
``sslhub embed`` agree. A live modality's front end (waveform -> features) is used as a
PyTorch module when there is one; otherwise the ``frontend.onnx`` in the folder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sslhub.decoding import InputDecoder
from sslhub.files import DecodeError, ModelInputs

FRONTEND_FILE = "frontend.onnx"


class InputPreprocessor:
    """Decodes files and texts into one batch of an encoder's inputs (numpy arrays).

    Args:
        input_names: the encoder's inputs, in order.
        preprocessing: the modality's ``input_spec()["preprocessing"]`` (composite modalities nest it by part).
        folder: where the files named in ``preprocessing`` live (``tokenizer.json``, ``frontend.onnx``).
        frontend: the modality's front end (waveform -> features) as a module; ``None``: ``frontend.onnx``
            in ``folder`` when the encoder takes features.
        text_field: the ``.jsonl`` key holding the text.
        keep_alive: an object to keep as long as this one (the temporary folder of ``folder``).
    """

    def __init__(
        self,
        input_names: Sequence[str],
        preprocessing: Mapping[str, Any],
        folder: Path,
        *,
        frontend: nn.Module | None = None,
        text_field: str = "text",
        keep_alive: Any = None,
    ):
        folder = Path(folder)
        metadata: dict[str, Any] = {"input_spec": {"preprocessing": dict(preprocessing)}}
        if (folder / FRONTEND_FILE).is_file():
            metadata["frontend"] = {"exported": True, "file": FRONTEND_FILE, "input_names": ["waveform"]}
        model = ModelInputs(
            tuple(input_names),
            metadata,
            folder,
            {"text_field": text_field},
            frontend=_numpy_frontend(frontend) if frontend is not None else None,
        )
        self.decoder = InputDecoder(model)
        self._keep_alive = keep_alive

    @property
    def kind(self) -> str:
        """The kind of input files read (``image``, ``text``, ``audio``... or ``arrays``)."""
        return self.decoder.kind

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing constants of this encoder's part (image size, tokenizer settings, sample rate...)."""
        return self.decoder.model.preprocessing(None if self.kind == "arrays" else self.kind)

    def batch(self, files: Sequence[str | Path], texts: Sequence[str]) -> dict[str, np.ndarray]:
        """One batch of inputs: the files' samples (in order), then the texts'."""
        if texts and self.kind != "text":
            raise DecodeError(f"texts= applies to text encoders; this one takes {list(self.decoder.model.input_names)}")
        return self.decoder.batch(files, texts)


def _numpy_frontend(module: nn.Module) -> Any:
    """A front end module as a function of numpy arrays: ``{"waveform": [B, T]}`` -> ``{"features": ...}``."""

    def frontend(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            features = module(torch.from_numpy(np.asarray(arrays["waveform"], dtype=np.float32)))
        return {"features": features.numpy()}

    return frontend
