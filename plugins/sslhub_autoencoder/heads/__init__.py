"""Decoder heads and the latent bottleneck of the autoencoder plugin."""

from sslhub_autoencoder.heads.decoders import (
    FrameDecoder,
    ImageDecoder,
    MLPDecoder,
    VectorToFrameDecoder,
    VectorToImageDecoder,
)
from sslhub_autoencoder.heads.latent import LatentHead

__all__ = [
    "FrameDecoder",
    "ImageDecoder",
    "LatentHead",
    "MLPDecoder",
    "VectorToFrameDecoder",
    "VectorToImageDecoder",
]
