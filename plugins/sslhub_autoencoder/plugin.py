"""Hook implementations of the built-in autoencoder plugin: registrations only."""

from __future__ import annotations

from sslhub import hookimpl
from sslhub_autoencoder.encoders.mlp import MLPEncoder, MLPParams
from sslhub_autoencoder.modality import TabularModality, TabularParams
from sslhub_autoencoder.objectives.autoencoder import AutoencoderObjective, AutoencoderParams
from sslhub_autoencoder.objectives.mae import MAEObjective, MAEParams
from sslhub_autoencoder.objectives.scarf import ScarfObjective, ScarfParams
from sslhub_autoencoder.objectives.vq_vae import VQVAEObjective, VQVAEParams


@hookimpl
def sslhub_register_modalities(registry) -> None:
    registry.register("tabular", TabularModality, params=TabularParams)


@hookimpl
def sslhub_register_encoders(registry) -> None:
    registry.register("mlp", MLPEncoder, params=MLPParams, modalities=["tabular"], provides=["pooled"])


@hookimpl
def sslhub_register_objectives(registry) -> None:
    registry.register(
        "autoencoder",
        AutoencoderObjective,
        params=AutoencoderParams,
        description="plain, denoising or variational autoencoder of images, spectrograms or vectors",
    )
    registry.register("mae", MAEObjective, params=MAEParams, modalities=["image"], requires=["tokens", "patch_masking"])
    registry.register(
        "scarf",
        ScarfObjective,
        params=ScarfParams,
        modalities=["tabular"],
        requires=["pooled"],
        description="SCARF: contrast each table row with a copy whose columns are partly swapped with other rows'",
    )
    registry.register(
        "vq_vae",
        VQVAEObjective,
        params=VQVAEParams,
        description="VQ-VAE: discrete codebook (EMA, dead-code restarts) between encoder and decoder",
    )
