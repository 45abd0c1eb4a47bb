"""Batched, device-side audio augmentations.

Two domains, by design:

* spectrogram masks (``time_mask``, ``frequency_mask``) edit ``batch["features"]``;
* waveform transforms (``random_gain``, ``additive_noise``) edit ``batch["waveform"]`` and
  recompute ``batch["features"]`` with the modality's own log-mel front end, so both keys
  stay consistent for feature and waveform encoders alike. Because they recompute the
  features, list them *before* the spectrogram masks in a recipe;
* ``time_shift`` rolls waveform and features together (shifts are whole hops), so it can go
  anywhere.
"""
