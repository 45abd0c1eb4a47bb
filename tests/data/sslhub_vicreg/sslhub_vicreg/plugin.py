"""Hook implementations of sslhub-vicreg: they only register components."""

from __future__ import annotations

from sslhub import hookimpl
from sslhub_vicreg.noise import FeatureNoise, FeatureNoiseParams
from sslhub_vicreg.objective import VICRegObjective, VICRegParams


@hookimpl
def sslhub_register_augmentations(registry) -> None:
    # No modalities=: it works on any batch with floating-point tensors.
    registry.register("feature_noise", FeatureNoise, params=FeatureNoiseParams)


@hookimpl
def sslhub_register_objectives(registry) -> None:
    # Needs only pooled features, so any encoder of any modality will do.
    registry.register("vicreg", VICRegObjective, params=VICRegParams)
