"""Hook implementations of the built-in audio plugin: registrations only."""

from __future__ import annotations

from sslhub import hookimpl
from sslhub_audio.augmentations.gain import RandomGain, RandomGainParams
from sslhub_audio.augmentations.noise import AdditiveNoise, AdditiveNoiseParams
from sslhub_audio.augmentations.resized_crop import ResizedCropParams, SpecResizedCrop
from sslhub_audio.augmentations.spec_augment import FrequencyMask, SpecMaskParams, TimeMask
from sslhub_audio.augmentations.time_shift import TimeShift, TimeShiftParams
from sslhub_audio.encoders.causal_frame_transformer import (
    CausalFrameTransformerEncoder,
    CausalFrameTransformerParams,
)
from sslhub_audio.encoders.frame_transformer import FrameTransformerEncoder, FrameTransformerParams
from sslhub_audio.encoders.wav2vec2 import Wav2Vec2Encoder, Wav2Vec2Params
from sslhub_audio.modality import AudioModality, AudioParams
from sslhub_audio.objectives.apc import APCObjective, APCParams
from sslhub_audio.objectives.clip_contrastive import ClipContrastiveObjective, ClipContrastiveParams
from sslhub_audio.objectives.masked_audio import MaskedAudioObjective, MaskedAudioParams
from sslhub_audio.objectives.wav2vec2 import Wav2Vec2Objective, Wav2Vec2ObjectiveParams

AUDIO = ["audio"]


@hookimpl
def sslhub_register_modalities(registry) -> None:
    registry.register("audio", AudioModality, params=AudioParams)


@hookimpl
def sslhub_register_augmentations(registry) -> None:
    registry.register("time_mask", TimeMask, params=SpecMaskParams, modalities=AUDIO)
    registry.register("frequency_mask", FrequencyMask, params=SpecMaskParams, modalities=AUDIO)
    registry.register("random_gain", RandomGain, params=RandomGainParams, modalities=AUDIO)
    registry.register("additive_noise", AdditiveNoise, params=AdditiveNoiseParams, modalities=AUDIO)
    registry.register("time_shift", TimeShift, params=TimeShiftParams, modalities=AUDIO)
    registry.register(
        "spec_resized_crop",
        SpecResizedCrop,
        params=ResizedCropParams,
        modalities=AUDIO,
        description="BYOL-A random resize crop of the log-mel: speed- and pitch-like stretches",
    )


@hookimpl
def sslhub_register_encoders(registry) -> None:
    registry.register(
        "frame_transformer",
        FrameTransformerEncoder,
        params=FrameTransformerParams,
        modalities=AUDIO,
        provides=["pooled", "tokens", "frame_masking", "frame_layers"],
    )
    registry.register(
        "causal_frame_transformer",
        CausalFrameTransformerEncoder,
        params=CausalFrameTransformerParams,
        modalities=AUDIO,
        provides=["pooled", "tokens", "causal"],
        description="log-mel frame transformer with causal convolutions and attention (no frame sees the future)",
    )
    registry.register(
        "wav2vec2",
        Wav2Vec2Encoder,
        params=Wav2Vec2Params,
        modalities=AUDIO,
        provides=["pooled", "tokens", "frame_masking", "frame_layers"],
        description="torchaudio wav2vec 2.0 architecture built from config (no weights downloaded), on waveforms",
    )
    registry.register(
        "hubert",
        Wav2Vec2Encoder,
        params=Wav2Vec2Params,
        modalities=AUDIO,
        provides=["pooled", "tokens", "frame_masking", "frame_layers"],
        description="torchaudio HuBERT architecture (same module as wav2vec2) built from config, on waveforms",
    )


@hookimpl
def sslhub_register_objectives(registry) -> None:
    registry.register(
        "masked_audio",
        MaskedAudioObjective,
        params=MaskedAudioParams,
        modalities=AUDIO,
        requires=["tokens", "frame_masking"],
    )
    registry.register(
        "apc",
        APCObjective,
        params=APCParams,
        modalities=AUDIO,
        requires=["tokens", "causal"],
        description="Autoregressive Predictive Coding: a causal encoder predicts the log-mel frame n steps ahead",
    )
    registry.register(
        "wav2vec2",
        Wav2Vec2Objective,
        params=Wav2Vec2ObjectiveParams,
        modalities=AUDIO,
        requires=["tokens", "frame_masking"],
        description="wav2vec 2.0: masked frames pick their Gumbel-quantized targets among distractors (contrastive)",
    )
    registry.register(
        "clip_contrastive",
        ClipContrastiveObjective,
        params=ClipContrastiveParams,
        modalities=AUDIO,
        requires=["pooled"],
        description="NT-Xent between two augmented views of each clip (COLA / SimCLR)",
    )
