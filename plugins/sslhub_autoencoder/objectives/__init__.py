"""Objectives of the autoencoder plugin."""
