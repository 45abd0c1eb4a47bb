"""Hook implementations of the built-in vision plugin: they only register components."""

from __future__ import annotations

from sslhub import hookimpl
from sslhub_vision import augmentations as aug
from sslhub_vision.encoders.small_cnn import SmallCNN, SmallCNNParams
from sslhub_vision.encoders.timm_encoder import TimmEncoder, TimmParams
from sslhub_vision.modality import ImageModality, ImageParams
from sslhub_vision.objectives.inpainting import InpaintingObjective, InpaintingParams
from sslhub_vision.objectives.simclr import SimCLRObjective, SimCLRParams

IMAGE = ["image"]


@hookimpl
def sslhub_register_modalities(registry) -> None:
    registry.register("image", ImageModality, params=ImageParams)


@hookimpl
def sslhub_register_augmentations(registry) -> None:
    registry.register(
        "random_resized_crop", aug.RandomResizedCrop, params=aug.RandomResizedCropParams, modalities=IMAGE
    )
    registry.register("horizontal_flip", aug.HorizontalFlip, params=aug.HorizontalFlipParams, modalities=IMAGE)
    registry.register("color_jitter", aug.ColorJitter, params=aug.ColorJitterParams, modalities=IMAGE)
    registry.register("random_grayscale", aug.RandomGrayscale, params=aug.RandomGrayscaleParams, modalities=IMAGE)
    registry.register("gaussian_blur", aug.GaussianBlur, params=aug.GaussianBlurParams, modalities=IMAGE)
    registry.register("solarize", aug.Solarize, params=aug.SolarizeParams, modalities=IMAGE)


@hookimpl
def sslhub_register_encoders(registry) -> None:
    registry.register(
        "timm",
        TimmEncoder,
        params=TimmParams,
        modalities=IMAGE,
        provides=["pooled", "spatial", "tokens", "patch_masking"],
    )
    registry.register("small_cnn", SmallCNN, params=SmallCNNParams, modalities=IMAGE, provides=["pooled", "spatial"])


@hookimpl
def sslhub_register_objectives(registry) -> None:
    registry.register("simclr", SimCLRObjective, params=SimCLRParams, modalities=IMAGE)
    registry.register(
        "inpainting", InpaintingObjective, params=InpaintingParams, modalities=IMAGE, requires=["spatial"]
    )
