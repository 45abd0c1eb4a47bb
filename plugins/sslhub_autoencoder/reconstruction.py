"""What the reconstructing objectives (``autoencoder``, ``vq_vae``) share.

The default target key by modality, choosing the encoder feature to decode from, building the
decoder for a target's rank, the held-out samples and batches of the report, and the picture of
inputs above their reconstructions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from sslhub import Batch, Encoder, EncoderOutput, Modality
from sslhub_autoencoder.heads import (
    FrameDecoder,
    ImageDecoder,
    MLPDecoder,
    VectorToFrameDecoder,
    VectorToImageDecoder,
)

#: the batch key reconstructed for each known modality.
TARGET_KEYS = {"image": "image", "audio": "features", "tabular": "vector"}


@torch.no_grad()
def probe_encoder(encoder: Encoder, example: Batch) -> EncoderOutput:
    """The encoder's output on ``example`` in eval mode (its training flag is restored)."""
    was_training = encoder.training
    encoder.eval()
    try:
        return encoder(example)
    finally:
        encoder.train(was_training)


def choose_source(requested: str, target: Tensor, features: EncoderOutput, target_key: str) -> str:
    """The encoder feature to decode from: ``pooled``, ``spatial`` or ``tokens``.

    Args:
        requested: ``decode_from`` of the parameters; ``auto`` takes ``spatial`` for images
            (``target [B, C, H, W]``), ``tokens`` for spectrograms (``[B, F, T]``) when the
            encoder gives them, else ``pooled``.
        target: the example target, whose rank decides what fits.
        features: the encoder's output on an example batch.
        target_key: the target's batch key, for messages.

    Raises:
        ValueError: the encoder lacks the requested feature, or it does not fit the target.
    """
    if requested == "auto":
        if target.dim() == 4 and features.spatial is not None:
            return "spatial"
        if target.dim() == 3 and features.tokens is not None:
            return "tokens"
        return "pooled"
    if getattr(features, requested) is None:
        raise ValueError(
            f"decode_from {requested} needs an encoder with {requested} features; this one gives "
            f"{', '.join(k for k in ('pooled', 'tokens', 'spatial') if getattr(features, k) is not None)}"
        )
    allowed = {4: ("pooled", "spatial"), 3: ("pooled", "tokens"), 2: ("pooled",)}[target.dim()]
    if requested not in allowed:
        raise ValueError(
            f"decode_from {requested} does not fit target {target_key!r} of shape {list(target.shape)}; "
            f"choose one of {', '.join(allowed)}"
        )
    return requested


def build_decoder(
    code_width: int, decode_from: str, target: Tensor, source: Tensor, width: int, hidden: list[int]
) -> nn.Module:
    """The decoder from codes of ``code_width`` channels back to ``target``'s shape.

    Args:
        code_width: channels of the code (per position for ``spatial``/``tokens``).
        decode_from: the source feature (see :func:`choose_source`).
        target: example target: ``[B, C, H, W]`` images, ``[B, F, T]`` spectrograms or ``[B, D]`` vectors.
        source: the example source feature: ``spatial [B, D, h, w]``, ``tokens [B, T', D]`` or ``pooled``.
        width: channels of the conv decoders' last stage.
        hidden: hidden sizes of the MLP decoder (vectors).
    """
    if target.dim() == 4:
        channels, size = target.shape[1], (target.shape[2], target.shape[3])
        if decode_from == "spatial":
            return ImageDecoder(code_width, channels, tuple(source.shape[-2:]), size, width=width)
        return VectorToImageDecoder(code_width, channels, size, width=width)
    if target.dim() == 3:
        bins, length = target.shape[1], target.shape[2]
        if decode_from == "tokens":
            return FrameDecoder(code_width, bins, length / source.shape[1], width=width)
        return VectorToFrameDecoder(code_width, bins, length, width=width)
    return MLPDecoder(code_width, target.shape[1], hidden)


class _WithoutLabels(Dataset):
    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Batch:
        return {k: v for k, v in self.dataset[index].items() if k != "label"}


def held_out_subset(modality: Modality, limit: int) -> Subset | None:
    """The first ``limit`` held-out samples: the modality's held-out set, else its eval test split.

    ``None`` when the modality has neither, or it is empty.
    """
    dataset = modality.held_out_dataset()
    if dataset is None:
        split = modality.eval_split()
        dataset = _WithoutLabels(split.test) if split is not None else None
    if dataset is None or len(dataset) == 0:  # type: ignore[arg-type]
        return None
    return Subset(dataset, range(min(limit, len(dataset))))  # type: ignore[arg-type]


def held_out_batches(subset: Subset, modality: Modality, device: torch.device) -> Iterator[Batch]:
    """Batches of 128 held-out samples on ``device``, in order and without labels."""
    for batch in DataLoader(subset, batch_size=128, shuffle=False, collate_fn=modality.collate):
        yield modality.on_device({k: v.to(device) for k, v in batch.items() if k != "label"})


@contextmanager
def evaluation_mode(*modules: nn.Module) -> Iterator[None]:
    """Put ``modules`` in eval mode for the block, then give each back its training flag."""
    states = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, state in zip(modules, states, strict=True):
            module.train(state)


def save_reconstruction_grid(path: Path, result: dict[str, Tensor]) -> Path:
    """Save up to 8 inputs in the first row and their reconstructions below as a PNG at ``path``.

    Args:
        path: the PNG to write (folders are made).
        result: ``target`` and ``prediction``: ``[B, C, H, W]`` images in [0, 1], or ``[B, F, T]``
            spectrograms (one gray picture each, low frequencies at the bottom, scaled to the
            inputs' range).
    """
    from torchvision.utils import save_image

    shown = min(8, result["target"].shape[0])
    target, prediction = result["target"][:shown].float(), result["prediction"][:shown].float()
    if target.dim() == 3:
        target, prediction = target.flip(1)[:, None], prediction.flip(1)[:, None]
        low, high = target.min(), target.max()
        target, prediction = ((x - low) / (high - low).clamp_min(1e-6) for x in (target, prediction))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat([target, prediction]).clamp(0, 1).cpu(), path, nrow=shown, padding=2)
    return path
