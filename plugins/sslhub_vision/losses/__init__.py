"""Losses usable without the framework."""

from sslhub_vision.losses.ntxent import NTXentLoss

__all__ = ["NTXentLoss"]
