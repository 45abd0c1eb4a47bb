"""Hook implementations of the built-in audio plugin: registrations only."""

from __future__ import annotations

from sslhub import hookimpl
from sslhub_audio.modality import AudioModality, AudioParams


@hookimpl
def sslhub_register_modalities(registry) -> None:
    registry.register("audio", AudioModality, params=AudioParams)
