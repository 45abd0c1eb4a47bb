"""Files and texts to an encoder's input arrays, as ``sslhub embed`` makes them, for PyTorch use.

:class:`InputPreprocessor` is :class:`sslhub.embed_files.FileEmbedder`'s decoding without its
ONNX model: the same image, text and audio decoders (so ``load_encoder(...).preprocess`` and
``sslhub embed`` agree), with the audio front end given as a PyTorch module when the modality
is at hand, or read from ``frontend.onnx`` in an export folder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sslhub.embed_files import AUDIO_EXTENSIONS, EmbedError, FileEmbedder


class _InputNames:
    """What :class:`FileEmbedder`'s decoders read from its model: the input names (and a path for messages)."""

    def __init__(self, input_names: Sequence[str], folder: Path):
        self.input_names = list(input_names)
        self.path = folder
        self.feature_dim = None


class InputPreprocessor(FileEmbedder):
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
        # FileEmbedder.__init__ opens an ONNX model; here only its decoders are wanted.
        self.model = _InputNames(input_names, folder)
        self.folder, self.text_field = Path(folder), text_field
        names = list(input_names)
        self.takes_waveform = names == ["waveform"]
        takes_features = names == ["features"]
        self.kind = {("image",): "image", ("input_ids", "attention_mask"): "text"}.get(tuple(names), "arrays")
        if self.takes_waveform or takes_features:
            self.kind = "audio"
        has_frontend_file = (self.folder / "frontend.onnx").is_file()
        self.metadata = {"frontend": {"exported": True, "file": "frontend.onnx"} if has_frontend_file else None}
        prep = dict(preprocessing)
        self.preprocessing = prep[self.kind] if isinstance(prep.get(self.kind), dict) else prep
        self._tokenizer: Any = None
        self._torch_frontend = frontend
        self._frontend: Any = None
        self._keep_alive = keep_alive

    def _load_tokenizer(self) -> Any:
        """The tokenizer file the preprocessing names, refused when it leads outside the folder."""
        name = str(self.preprocessing.get("tokenizer_file") or "tokenizer.json")
        path, root = (self.folder / name).resolve(), self.folder.resolve()
        if root not in path.parents:
            raise EmbedError(f"tokenizer_file {name!r} leads outside {self.folder}; only files inside it are read")
        return super()._load_tokenizer()

    def accepted_extensions(self) -> tuple[str, ...]:
        if self.kind == "audio" and not self.preprocessing.get("sample_rate"):
            return super().accepted_extensions()[len(AUDIO_EXTENSIONS) :]
        return super().accepted_extensions()

    def batch(self, files: Sequence[str | Path], texts: Sequence[str]) -> dict[str, np.ndarray]:
        """One batch of inputs: the files' samples (in order), then the texts'."""
        if texts and self.kind != "text":
            raise EmbedError(f"texts= applies to text encoders; this one takes {self.model.input_names}")
        samples = [sample for _, sample in self._samples(self.expand(files))] if files else []
        if texts:
            tokenizer = self._load_tokenizer()
            samples += [self._token_ids(tokenizer, text) for text in texts]
        if not samples:
            raise EmbedError("nothing to preprocess: pass files or texts")
        arrays = [s for s in samples if isinstance(s, dict)]
        if arrays and len(arrays) != len(samples):
            raise EmbedError("pass .npz/.npy files apart from other files: they are already preprocessed")
        if arrays:
            return {name: np.concatenate([a[name] for a in arrays]) for name in self.model.input_names}
        if self.kind == "image":
            return {"image": np.stack(samples)}
        if self.kind == "text":
            return self._pad_tokens(samples)
        return self._features(np.stack(samples))

    def _features(self, waveforms: np.ndarray) -> dict[str, np.ndarray]:
        """Waveforms as they are (wav2vec2-style encoders), or through the front end (log-mel encoders)."""
        if self.takes_waveform:
            return {"waveform": waveforms.astype(np.float32)}
        if self._torch_frontend is None:
            return super()._features(waveforms)
        with torch.no_grad():
            features = self._torch_frontend(torch.from_numpy(waveforms.astype(np.float32)))
        return {"features": features.numpy()}
