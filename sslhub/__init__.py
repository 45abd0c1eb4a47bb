"""sslhub: plugin-based self-supervised pretraining across modalities.

Plugin authors import only from here (and :mod:`sslhub.testing`).
"""

from sslhub.catalog import Catalog, PluginError, PluginRecord
from sslhub.components import (
    Augmentation,
    Batch,
    BuildContext,
    Encoder,
    EncoderOutput,
    EncoderSet,
    EvalSplit,
    ExportFrontend,
    Modality,
    Objective,
    ObjectiveOutput,
    Params,
)
from sslhub.distributed import gather_with_grad
from sslhub.hookspecs import hookimpl
from sslhub.python_api import augmentations, encoders, modalities, objectives
from sslhub.registry import Component, Provider, Registry, RegistryError

__version__ = "0.1.0"

__all__ = [
    "Augmentation",
    "Batch",
    "BuildContext",
    "Catalog",
    "Component",
    "Encoder",
    "EncoderOutput",
    "EncoderSet",
    "EvalSplit",
    "ExportFrontend",
    "Modality",
    "Objective",
    "ObjectiveOutput",
    "Params",
    "PluginError",
    "PluginRecord",
    "Provider",
    "Registry",
    "RegistryError",
    "__version__",
    "augmentations",
    "encoders",
    "gather_with_grad",
    "hookimpl",
    "modalities",
    "objectives",
]
