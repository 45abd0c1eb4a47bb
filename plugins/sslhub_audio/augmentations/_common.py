"""Helpers shared by the audio augmentations."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from sslhub import BuildContext


def featurizer_from(context: BuildContext, augmentation: str) -> Callable[[Tensor], Tensor]:
    """The modality's ``featurize(waveform [B, T]) -> features`` used to recompute features.

    Raises:
        ValueError: the context has no modality with a ``featurize`` method.
    """
    featurize = getattr(context.modality, "featurize", None)
    if not callable(featurize):
        raise ValueError(
            f"augmentation '{augmentation}' needs the audio modality (to recompute log-mel features after "
            f"editing the waveform), but the build context has {type(context.modality).__name__}"
        )
    return featurize


def check_key(batch: dict[str, Tensor], key: str, augmentation: str) -> Tensor:
    if key not in batch:
        raise ValueError(f"augmentation '{augmentation}' needs batch['{key}'], but the batch has {sorted(batch)}")
    return batch[key]
