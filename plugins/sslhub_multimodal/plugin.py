"""Hook implementations of the built-in multimodal plugin: registrations only."""

from __future__ import annotations

from sslhub import hookimpl
from sslhub_multimodal.modality import ImageTextModality, ImageTextParams
from sslhub_multimodal.objectives.clip import CLIPObjective, CLIPParams


@hookimpl
def sslhub_register_modalities(registry) -> None:
    # a composite: its batches hold an image part and a text part (built by name through the
    # build context), so image and text components accept it; it hands whole-word masking's
    # continuation_token_ids to its text part
    registry.register(
        "image_text",
        ImageTextModality,
        params=ImageTextParams,
        modalities=["image", "text"],
        provides=["word_continuations"],
    )


@hookimpl
def sslhub_register_objectives(registry) -> None:
    registry.register("clip", CLIPObjective, params=CLIPParams, modalities=["image_text"], encoders=["image", "text"])
