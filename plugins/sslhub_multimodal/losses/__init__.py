"""Losses of the multimodal plugin, usable without the framework."""

from sslhub_multimodal.losses.clip import CAPTION_KEY, CLIPLoss, caption_keys, clip_loss

__all__ = ["CAPTION_KEY", "CLIPLoss", "caption_keys", "clip_loss"]
