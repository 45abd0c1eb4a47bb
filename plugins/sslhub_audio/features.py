"""Waveform helpers and the batched log-mel front end shared by the modality and augmentations.

Shapes: ``waveform [B, T]`` float32 -> ``features [B, n_mels, frames]`` with
``frames = T // hop_length + 1`` (centered STFT).
"""

from __future__ import annotations

from typing import Literal

import torch
import torchaudio
from torch import Tensor, nn

NormalizeMode = Literal["utterance", "none"]


def fix_length(waveform: Tensor, num_samples: int) -> Tensor:
    """Center-crop or symmetrically zero-pad a mono waveform to exactly ``num_samples``.

    Deterministic on purpose: the same file always yields the same samples, so datasets stay
    reproducible per index and random cropping is left to (device-side) augmentations.

    Args:
        waveform: ``[T]`` float tensor.
        num_samples: target length (> 0).

    Returns:
        ``[num_samples]`` tensor.
    """
    if num_samples <= 0:
        raise ValueError(f"num_samples must be > 0, got {num_samples}")
    length = waveform.shape[-1]
    if length > num_samples:
        start = (length - num_samples) // 2
        return waveform[..., start : start + num_samples]
    if length < num_samples:
        missing = num_samples - length
        left = missing // 2
        return torch.nn.functional.pad(waveform, (left, missing - left))
    return waveform


class LogMelFeatures(nn.Module):
    """Log-mel spectrogram with optional per-utterance normalisation, computed on a batch.

    ``features = log(mel_power + log_offset)``; with ``normalize="utterance"`` each utterance
    is then standardised by its own mean and standard deviation over all mel bins and
    frames (one scalar pair per utterance, so spectral shape and loudness contours survive
    while absolute level and recording gain are removed).

    Args:
        sample_rate: waveform sample rate in Hz.
        n_fft: FFT size.
        hop_length: samples between frames.
        win_length: window length (Hann).
        n_mels: mel bands (HTK mel scale, no filter-bank normalisation).
        f_min: lowest band edge in Hz.
        f_max: highest band edge in Hz; ``None`` for ``sample_rate / 2``.
        normalize: ``"utterance"`` or ``"none"``.
        log_offset: added to the mel power before the log (avoids ``log(0)`` in silence).
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        hop_length: int,
        win_length: int,
        n_mels: int,
        f_min: float = 0.0,
        f_max: float | None = None,
        normalize: NormalizeMode = "utterance",
        log_offset: float = 1e-6,
    ):
        super().__init__()
        if win_length > n_fft:
            raise ValueError(f"win_length ({win_length}) must be <= n_fft ({n_fft})")
        if normalize not in ("utterance", "none"):
            raise ValueError(f"normalize must be 'utterance' or 'none', got {normalize!r}")
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.normalize = normalize
        self.log_offset = log_offset
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            f_min=f_min,
            f_max=f_max,
            n_mels=n_mels,
            power=2.0,
            center=True,
        )

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a waveform of ``num_samples`` samples."""
        return num_samples // self.hop_length + 1

    def forward(self, waveform: Tensor) -> Tensor:
        """Args: waveform ``[B, T]``. Returns: ``[B, n_mels, T // hop_length + 1]`` float32."""
        if waveform.dim() != 2:
            raise ValueError(f"waveform must be [batch, samples], got shape {tuple(waveform.shape)}")
        # The STFT and log are done in fp32 even under autocast: bf16 log-mels are too coarse.
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            power = self.mel(waveform.float())
            features = torch.log(power + self.log_offset)
            if self.normalize == "utterance":
                mean = features.mean(dim=(1, 2), keepdim=True)
                std = features.std(dim=(1, 2), keepdim=True).clamp_min(1e-5)
                features = (features - mean) / std
        return features
