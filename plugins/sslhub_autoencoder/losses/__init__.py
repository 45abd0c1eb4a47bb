"""Losses of the autoencoder plugin, usable without the framework."""

from sslhub_autoencoder.losses.kl import gaussian_kl
from sslhub_autoencoder.losses.reconstruction import RECONSTRUCTION_LOSSES, reconstruction_error

__all__ = ["RECONSTRUCTION_LOSSES", "gaussian_kl", "reconstruction_error"]
