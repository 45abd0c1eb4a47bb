"""Audio files to ``waveform`` or log-mel ``features`` inputs, as the audio modality made them; no torch.

Registered in the ``sslhub.files`` entry-point group. Files are decoded with ``soundfile``,
mixed to mono, resampled to ``sample_rate`` (scipy's polyphase resampler), center-cropped or
zero-padded to ``num_samples``. Models taking ``features`` get them from the front end: the
caller's (a live modality's, in ``load_encoder``) or the exported ``frontend.onnx`` run with
onnxruntime.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import sslhub

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")


class AudioDecoder(sslhub.FileDecoder):
    """Audio files -> ``{"waveform": float32 [B, num_samples]}`` or the front end's ``{"features": ...}``."""

    kind = "audio"
    extensions = AUDIO_EXTENSIONS

    def __init__(self, model: sslhub.ModelInputs):
        super().__init__(model)
        self.preprocessing = model.preprocessing("audio")
        self._frontend: Any = None

    @classmethod
    def accepts(cls, model: sslhub.ModelInputs) -> bool:
        prep = model.preprocessing("audio")
        return model.input_names in (("waveform",), ("features",)) and {"sample_rate", "num_samples"} <= set(prep)

    def read(self, path: Path) -> Iterator[tuple[str, np.ndarray]]:
        import soundfile

        try:
            data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        except (RuntimeError, OSError, soundfile.LibsndfileError) as error:
            raise sslhub.DecodeError(f"{path}: cannot decode the audio ({error})") from None
        if data.shape[0] == 0:
            raise sslhub.DecodeError(f"{path}: the file holds no samples")
        waveform = data.mean(axis=1)
        target = int(self.preprocessing["sample_rate"])
        if rate != target:
            waveform = resample(waveform, rate, target, path)
        yield str(path), fix_length(waveform, int(self.preprocessing["num_samples"]))

    def collate(self, samples: list[np.ndarray]) -> dict[str, np.ndarray]:
        waveforms = {"waveform": np.stack(samples).astype(np.float32)}
        if self.model.input_names == ("waveform",):
            return waveforms
        if self.model.frontend is not None:
            return self.model.frontend(waveforms)
        session = self._exported_frontend()
        outputs = session.run(None, waveforms)
        return dict(zip([o.name for o in session.get_outputs()], outputs, strict=True))

    def _exported_frontend(self) -> Any:
        """The exported front end (waveform -> features) in onnxruntime, refused when it was not exported."""
        if self._frontend is None:
            frontend = self.model.metadata.get("frontend") or {}
            if not frontend.get("exported"):
                reason = frontend.get("reason", "this export has none")
                raise sslhub.DecodeError(
                    f"{self.model.folder}: the model takes log-mel features and no waveform front end was exported "
                    f"({reason}); compute the features as input_spec.preprocessing describes and pass them as .npz"
                )
            name = str(frontend.get("file") or "frontend.onnx")
            self._frontend = self.model.onnx_session(name, what="the metadata's frontend.file")
        return self._frontend


def fix_length(waveform: np.ndarray, num_samples: int) -> np.ndarray:
    """Center-crop or symmetrically zero-pad to ``num_samples`` (as the audio modality does)."""
    length = waveform.shape[0]
    if length > num_samples:
        start = (length - num_samples) // 2
        return waveform[start : start + num_samples]
    if length < num_samples:
        missing = num_samples - length
        return np.pad(waveform, (missing // 2, missing - missing // 2))
    return waveform


def resample(waveform: np.ndarray, rate: int, target: int, path: Path) -> np.ndarray:
    """Polyphase resampling (scipy); training used torchaudio's sinc resampler, so values differ slightly."""
    try:
        from math import gcd

        from scipy.signal import resample_poly
    except ImportError:
        raise sslhub.DecodeError(
            f"{path} is at {rate} Hz, the model expects {target} Hz: install scipy to resample"
        ) from None
    divisor = gcd(rate, target)
    return resample_poly(waveform, target // divisor, rate // divisor).astype(np.float32)
