"""Heads trained with an objective (not exported)."""
