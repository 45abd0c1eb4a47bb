"""Encoders of the autoencoder plugin."""

from sslhub_autoencoder.encoders.mlp import MLPEncoder, MLPParams

__all__ = ["MLPEncoder", "MLPParams"]
