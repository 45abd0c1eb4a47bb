"""Losses of the audio plugin, usable on their own."""
