"""Objectives of the multimodal plugin."""
