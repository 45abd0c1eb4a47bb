"""sslhub built-in autoencoder plugin.

Registers:
    - objective ``autoencoder``: plain, denoising or variational autoencoder of images
      (``image``), log-mel spectrograms (``features``) or vectors (``vector``), chosen by modality
      (:mod:`sslhub_autoencoder.objectives.autoencoder`).
    - objective ``mae``: masked autoencoder for timm Vision Transformers
      (:mod:`sslhub_autoencoder.objectives.mae`).
    - modality ``tabular``: numeric tables from CSV, ``.npy``/``.npz`` or scikit-learn's bundled
      sets as standardised ``vector`` batches (:mod:`sslhub_autoencoder.modality`).
    - encoder ``mlp``: a multilayer perceptron for ``vector`` batches
      (:mod:`sslhub_autoencoder.encoders.mlp`).

Losses and heads are usable alone: :func:`sslhub_autoencoder.losses.gaussian_kl`,
:func:`sslhub_autoencoder.losses.reconstruction_error`, :mod:`sslhub_autoencoder.heads`.
"""
