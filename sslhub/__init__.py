"""sslhub: plugin-based self-supervised pretraining across modalities.

Plugin authors import only from here (and :mod:`sslhub.testing`).

The names below are loaded on first use (PEP 562), so ``import sslhub`` and commands that
need no model, such as ``sslhub --help`` and ``sslhub embed``, do not import torch. The file
decoder interface (:class:`FileDecoder`, :class:`ModelInputs`, :class:`DecodeError`) never does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module defining it
_EXPORTS = {
    "Callback": "sslhub.callbacks",
    "CallbackRegistry": "sslhub.callbacks",
    "CheckpointSaved": "sslhub.callbacks",
    "EvaluationDone": "sslhub.callbacks",
    "NonFiniteStep": "sslhub.callbacks",
    "RunInfo": "sslhub.callbacks",
    "StepEnd": "sslhub.callbacks",
    "StopRequest": "sslhub.callbacks",
    "TrainEnd": "sslhub.callbacks",
    "TrainStart": "sslhub.callbacks",
    "ValidationDone": "sslhub.callbacks",
    "NonFiniteLossError": "sslhub.errors",
    "SSLHubError": "sslhub.errors",
    "DecodeError": "sslhub.files",
    "FileDecoder": "sslhub.files",
    "ModelInputs": "sslhub.files",
    "Catalog": "sslhub.catalog",
    "PluginError": "sslhub.catalog",
    "PluginRecord": "sslhub.catalog",
    "Augmentation": "sslhub.components",
    "Batch": "sslhub.components",
    "BuildContext": "sslhub.components",
    "Encoder": "sslhub.components",
    "EncoderOutput": "sslhub.components",
    "EncoderSet": "sslhub.components",
    "EvalSplit": "sslhub.components",
    "ConvDecoder": "sslhub.layers",
    "ExportFrontend": "sslhub.components",
    "PatchLayout": "sslhub.components",
    "Modality": "sslhub.components",
    "ModalityInfo": "sslhub.components",
    "Objective": "sslhub.components",
    "ObjectiveOutput": "sslhub.components",
    "Params": "sslhub.components",
    "UnreadableFiles": "sslhub.unreadable",
    "path_problems": "sslhub.components",
    "average_gradients": "sslhub.distributed",
    "gather_with_grad": "sslhub.distributed",
    "is_distributed": "sslhub.distributed",
    "is_main_process": "sslhub.distributed",
    "process_rank": "sslhub.distributed",
    "world_size": "sslhub.distributed",
    "hookimpl": "sslhub.hookspecs",
    "LoadedEncoder": "sslhub.loading",
    "load_encoder": "sslhub.loading",
    "augmentations": "sslhub.python_api",
    "encoders": "sslhub.python_api",
    "modalities": "sslhub.python_api",
    "objectives": "sslhub.python_api",
    "Component": "sslhub.registry",
    "Provider": "sslhub.registry",
    "Registry": "sslhub.registry",
    "RegistryError": "sslhub.registry",
    "GroupPattern": "sslhub.splits",
    "GroupSplit": "sslhub.splits",
    "classes_without_training_samples": "sslhub.splits",
    "compile_group_pattern": "sslhub.splits",
    "group_split": "sslhub.splits",
    "split_by_path_groups": "sslhub.splits",
    "path_group_problems": "sslhub.splits",
    "groups_from_paths": "sslhub.splits",
    "split_problem": "sslhub.splits",
    "unmatched_paths_problem": "sslhub.splits",
    "folder_classes": "sslhub.sources",
    "folder_fingerprint": "sslhub.sources",
    "holdout_split": "sslhub.sources",
    "list_files": "sslhub.sources",
}

__all__ = [
    "Augmentation",
    "Batch",
    "BuildContext",
    "Callback",
    "CallbackRegistry",
    "Catalog",
    "CheckpointSaved",
    "Component",
    "DecodeError",
    "Encoder",
    "EncoderOutput",
    "EncoderSet",
    "ConvDecoder",
    "EvalSplit",
    "EvaluationDone",
    "ExportFrontend",
    "FileDecoder",
    "GroupPattern",
    "GroupSplit",
    "LoadedEncoder",
    "Modality",
    "ModalityInfo",
    "ModelInputs",
    "NonFiniteLossError",
    "NonFiniteStep",
    "Objective",
    "ObjectiveOutput",
    "Params",
    "PatchLayout",
    "PluginError",
    "PluginRecord",
    "Provider",
    "Registry",
    "RegistryError",
    "RunInfo",
    "SSLHubError",
    "StepEnd",
    "StopRequest",
    "TrainEnd",
    "TrainStart",
    "UnreadableFiles",
    "ValidationDone",
    "__version__",
    "augmentations",
    "average_gradients",
    "classes_without_training_samples",
    "compile_group_pattern",
    "encoders",
    "folder_classes",
    "folder_fingerprint",
    "gather_with_grad",
    "group_split",
    "groups_from_paths",
    "holdout_split",
    "hookimpl",
    "is_distributed",
    "is_main_process",
    "list_files",
    "load_encoder",
    "modalities",
    "objectives",
    "process_rank",
    "path_group_problems",
    "path_problems",
    "split_by_path_groups",
    "split_problem",
    "unmatched_paths_problem",
    "world_size",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sslhub' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from sslhub.callbacks import (
        Callback,
        CallbackRegistry,
        CheckpointSaved,
        EvaluationDone,
        NonFiniteStep,
        RunInfo,
        StepEnd,
        StopRequest,
        TrainEnd,
        TrainStart,
        ValidationDone,
    )
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
        ModalityInfo,
        Objective,
        ObjectiveOutput,
        Params,
        PatchLayout,
        path_problems,
    )
    from sslhub.distributed import (
        average_gradients,
        gather_with_grad,
        is_distributed,
        is_main_process,
        process_rank,
        world_size,
    )
    from sslhub.errors import NonFiniteLossError, SSLHubError
    from sslhub.files import DecodeError, FileDecoder, ModelInputs
    from sslhub.hookspecs import hookimpl
    from sslhub.loading import LoadedEncoder, load_encoder
    from sslhub.python_api import augmentations, encoders, modalities, objectives
    from sslhub.registry import Component, Provider, Registry, RegistryError
    from sslhub.sources import folder_classes, folder_fingerprint, holdout_split, list_files
    from sslhub.splits import (
        GroupPattern,
        GroupSplit,
        classes_without_training_samples,
        compile_group_pattern,
        group_split,
        groups_from_paths,
        path_group_problems,
        split_by_path_groups,
        split_problem,
        unmatched_paths_problem,
    )
    from sslhub.unreadable import UnreadableFiles
