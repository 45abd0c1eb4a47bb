"""CLIP's symmetric InfoNCE between image and text embeddings, with a learnable temperature.

References:
    - Radford et al., "Learning Transferable Visual Models From Natural Language Supervision"
      (CLIP), ICML 2021, https://arxiv.org/abs/2103.00020 (the logit scale is learned as
      ``log(1/T)``, initialised at ``T = 0.07`` and clipped so the scale stays <= 100).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslhub import gather_with_grad, process_rank

#: multiplier of the caption hash (a prime below 2**31, so products stay exact in int64).
_HASH_BASE = 1_000_003
_HASH_MODULUS = 2_147_483_647
MISSING_POSITIVE = "every row of positives needs at least one True (its own pair)"


#: The batch key under which the ``image_text`` modality keeps each caption's :func:`caption_keys`
#: value as written, before caption augmentations change the ids.
CAPTION_KEY = "caption_key"


def caption_keys(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """One int64 key per caption, equal for captions with identical token ids.

    A polynomial hash of the real (unpadded) tokens and the length, so it is the same for a
    caption padded to different batch lengths, and comparable across ranks (fixed shape).

    Shapes:
        input_ids, attention_mask: ``int64 [B, L]``.
        output: ``int64 [B]``.
    """
    if input_ids.shape != attention_mask.shape or input_ids.ndim != 2:
        raise ValueError(
            f"input_ids and attention_mask must both be [B, L]; got {list(input_ids.shape)}, "
            f"{list(attention_mask.shape)}"
        )
    mask = attention_mask.long()
    length = input_ids.shape[1]
    powers = torch.tensor(
        [pow(_HASH_BASE, position, _HASH_MODULUS) for position in range(length)],
        dtype=torch.int64,
        device=input_ids.device,
    )
    # (id + 1) so that token 0 still counts; both factors are < 2**31, so products fit in int64.
    terms = ((input_ids.long() + 1) % _HASH_MODULUS) * powers * mask % _HASH_MODULUS
    return terms.sum(1) % _HASH_MODULUS + mask.sum(1) * _HASH_MODULUS


def clip_loss(logits_per_image: Tensor, logits_per_text: Tensor, positives: Tensor) -> Tensor:
    """Symmetric cross-entropy of the two directions, the mean of image->text and text->image.

    Each row's target spreads evenly over its positives (one per row in plain CLIP; more
    when identical captions in the batch count as positives of each other).

    Args:
        logits_per_image: ``[B, N]`` this rank's images against all ``N`` texts.
        logits_per_text: ``[B, N]`` this rank's texts against all ``N`` images.
        positives: ``bool [B, N]``, True where text (image) ``n`` matches image (text) ``b``;
            every row needs at least one True.

    Returns:
        scalar loss.
    """
    if logits_per_image.shape != logits_per_text.shape or logits_per_image.shape != positives.shape:
        raise ValueError(
            f"logits_per_image {list(logits_per_image.shape)}, logits_per_text {list(logits_per_text.shape)} "
            f"and positives {list(positives.shape)} must have the same [B, N] shape"
        )
    counts = positives.sum(1, keepdim=True)
    missing = (counts == 0).any()
    if counts.device.type == "cpu" and not torch.compiler.is_compiling():
        if bool(missing):
            raise ValueError(MISSING_POSITIVE)
    else:
        # Reading the flag on the host would stall the GPU at every step; the device asserts on its own.
        torch._assert_async(~missing, MISSING_POSITIVE)
    targets = positives.to(logits_per_image.dtype) / counts.to(logits_per_image.dtype)
    image_to_text = -(targets * F.log_softmax(logits_per_image, dim=1)).sum(1).mean()
    text_to_image = -(targets * F.log_softmax(logits_per_text, dim=1)).sum(1).mean()
    return (image_to_text + text_to_image) / 2


class CLIPLoss(nn.Module):
    """Contrast each image with every text and each text with every image of the batch.

    For ``B`` pairs on this rank (``N = B * world_size`` with negatives gathered), with
    L2-normalised embeddings and ``s = exp(log_logit_scale)`` clipped at ``max_logit_scale``::

        logits_per_image = s * image @ all_text.T    # [B, N]
        logits_per_text  = s * text @ all_image.T    # [B, N]
        loss = (CE(logits_per_image, pos) + CE(logits_per_text, pos)) / 2

    Args:
        temperature: initial ``T``; the scale starts at ``1 / T``.
        learnable_temperature: learn ``log(1/T)`` as a parameter (else a fixed buffer).
        max_logit_scale: upper clip of ``1 / T`` (CLIP: 100); the clip is applied in the
            forward pass, so the stored parameter may drift above it but never acts above it.
        gather_distributed: under ``torch.distributed``, use every rank's embeddings as
            negatives (gradients flow back through ``sslhub.gather_with_grad``). Every rank
            must pass the same ``B``.

    Shapes:
        image, text: ``[B, D]``, row ``b`` of each is a pair. keys (optional): ``int64 [B]``
        from :func:`caption_keys`; pairs with equal keys are positives of each other.
        output: scalar.

    Example::

        loss = CLIPLoss()(image_projection(image_features), text_projection(text_features))
    """

    def __init__(
        self,
        temperature: float = 0.07,
        learnable_temperature: bool = True,
        max_logit_scale: float = 100.0,
        gather_distributed: bool = True,
    ):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if max_logit_scale <= 0:
            raise ValueError(f"max_logit_scale must be > 0, got {max_logit_scale}")
        if 1.0 / temperature > max_logit_scale:
            raise ValueError(
                f"temperature {temperature} gives a logit scale of {1 / temperature:.4g}, above "
                f"max_logit_scale {max_logit_scale}; raise the temperature or the maximum"
            )
        initial = torch.tensor(math.log(1.0 / temperature), dtype=torch.float32)
        if learnable_temperature:
            self.log_logit_scale = nn.Parameter(initial)
        else:
            self.register_buffer("log_logit_scale", initial)
        self.max_log_logit_scale = math.log(max_logit_scale)
        self.gather_distributed = gather_distributed

    @property
    def logit_scale(self) -> Tensor:
        """``exp(log_logit_scale)`` clipped to ``max_logit_scale`` (0-d tensor, keeps the gradient below it)."""
        return self.log_logit_scale.clamp(max=self.max_log_logit_scale).exp()

    @property
    def temperature(self) -> float:
        """The current effective temperature ``1 / logit_scale``."""
        return float(1.0 / self.logit_scale.detach())

    def logits_and_positives(self, image: Tensor, text: Tensor, keys: Tensor | None = None) -> tuple[Tensor, ...]:
        """Scaled cosine logits in both directions and the positive mask.

        Returns:
            ``logits_per_image [B, N]``, ``logits_per_text [B, N]``, ``positives bool [B, N]``
            (each pair's own column, at ``rank * B + b``, plus equal-key columns).
        """
        if image.ndim != 2 or image.shape != text.shape:
            raise ValueError(
                f"image and text embeddings must both be [B, D] with equal shapes; got "
                f"{list(image.shape)}, {list(text.shape)}"
            )
        if keys is not None and keys.shape != image.shape[:1]:
            raise ValueError(f"keys must be [B] = [{image.shape[0]}], got {list(keys.shape)}")
        batch = image.shape[0]
        image = F.normalize(image, dim=1)
        text = F.normalize(text, dim=1)
        if self.gather_distributed:
            all_image, all_text = gather_with_grad(image), gather_with_grad(text)
        else:
            all_image, all_text = image, text
        total = all_image.shape[0]
        offset = process_rank() * batch if total != batch else 0
        scale = self.logit_scale.to(image.dtype)
        logits_per_image = scale * image @ all_text.T
        logits_per_text = scale * text @ all_image.T
        own = torch.arange(batch, device=image.device) + offset
        positives = torch.zeros(batch, total, dtype=torch.bool, device=image.device)
        positives[torch.arange(batch, device=image.device), own] = True
        if keys is not None:
            all_keys = gather_with_grad(keys) if self.gather_distributed else keys
            positives |= keys[:, None] == all_keys[None, :]
        return logits_per_image, logits_per_text, positives

    def forward(self, image: Tensor, text: Tensor, keys: Tensor | None = None) -> Tensor:
        return clip_loss(*self.logits_and_positives(image, text, keys))


def retrieval_accuracy(logits: Tensor, positives: Tensor) -> Tensor:
    """Share of rows whose highest logit is at a positive column (0-d float tensor)."""
    best = logits.argmax(dim=1)
    return positives.gather(1, best[:, None]).float().mean()
