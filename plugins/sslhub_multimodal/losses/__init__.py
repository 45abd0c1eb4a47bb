"""Losses of the multimodal plugin, usable without the framework."""

from sslhub_multimodal.losses.clip import CLIPLoss, caption_keys, clip_loss

__all__ = ["CLIPLoss", "caption_keys", "clip_loss"]
