"""Batched, device-side token augmentations: dropout, span deletion, random replacement.

All take ``input_ids``/``attention_mask`` ``int64 [B, L]`` (right-padded) and return the same
shapes. Special tokens ([CLS], [SEP], [MASK]...) and padding are never touched. Deleting
tokens shifts the rest of the row left and pads the freed tail, updating ``attention_mask``.
Random draws come from torch's RNG on the batch's device, one per token or per sample.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from sslhub import Augmentation, Batch, BuildContext, Params


class _TokenAugmentation(Augmentation):
    """Shared set-up: which ids are special, what the pad id and vocabulary are."""

    def __init__(self, context: BuildContext):
        super().__init__()
        if context.modality is None:
            raise ValueError(f"{type(self).__name__} needs the built text modality in its context")
        info, who = context.modality.info(), type(self).__name__
        vocab_size = int(info.needed("vocab_size", who))
        self.pad_token_id = int(info.needed("pad_token_id", who))
        is_special = torch.zeros(vocab_size, dtype=torch.bool)
        is_special[torch.tensor(sorted(set(info.special_token_ids or ()) | {self.pad_token_id}))] = True
        self.register_buffer("is_special", is_special, persistent=False)
        self.register_buffer("replacement_ids", torch.nonzero(~is_special).squeeze(1), persistent=False)

    def eligible(self, batch: Batch) -> Tensor:
        """``bool [B, L]``: real, non-special tokens (the only ones an augmentation may change)."""
        return batch["attention_mask"].bool() & ~self.is_special.to(batch["input_ids"].device)[batch["input_ids"]]


def delete_tokens(batch: Batch, delete: Tensor, pad_token_id: int) -> Batch:
    """Remove positions where ``delete`` is True, shifting later tokens left and padding the end.

    Args:
        batch: ``input_ids``/``attention_mask`` ``int64 [B, L]`` (other keys pass through).
        delete: ``bool [B, L]``.
        pad_token_id: id written into freed positions.

    Returns:
        A new batch with the same shapes; ``attention_mask`` is 1 for the kept real tokens.
    """
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    keep = attention_mask.bool() & ~delete
    # Kept tokens go to position (number of kept tokens before them); the rest to a dump column
    # that is cut off afterwards. Positions past the kept count keep the pad fill.
    target = torch.where(keep, keep.long().cumsum(dim=1) - 1, torch.full_like(input_ids, input_ids.shape[1]))
    padded_ids = torch.full(
        (input_ids.shape[0], input_ids.shape[1] + 1), pad_token_id, dtype=input_ids.dtype, device=input_ids.device
    )
    new_ids = padded_ids.scatter(1, target, input_ids)[:, :-1]
    lengths = keep.sum(dim=1, keepdim=True)
    new_mask = (torch.arange(input_ids.shape[1], device=input_ids.device) < lengths).to(attention_mask.dtype)
    return {**batch, "input_ids": new_ids, "attention_mask": new_mask}


class TokenDropoutParams(Params):
    """Parameters of ``token_dropout``."""

    p: float = Field(0.1, ge=0.0, lt=1.0, description="Probability that each non-special token is deleted.")


class TokenDropout(_TokenAugmentation):
    """Delete each non-special token independently with probability ``p``."""

    def __init__(self, params: TokenDropoutParams, context: BuildContext):
        super().__init__(context)
        self.p = params.p

    def forward(self, batch: Batch) -> Batch:
        eligible = self.eligible(batch)
        delete = eligible & (torch.rand(eligible.shape, device=eligible.device) < self.p)
        return delete_tokens(batch, delete, self.pad_token_id)


class SpanDeletionParams(Params):
    """Parameters of ``span_deletion``."""

    p: float = Field(0.5, ge=0.0, le=1.0, description="Probability that a sample loses one span.")
    max_span: int = Field(5, ge=1, description="Longest span deleted; lengths are uniform in [1, max_span].")


class SpanDeletion(_TokenAugmentation):
    """With probability ``p`` per sample, delete one run of consecutive non-special tokens.

    The span is counted over non-special tokens (a [SEP] inside a packed sample is skipped
    over, not deleted) and never removes a sample's last non-special token.
    """

    def __init__(self, params: SpanDeletionParams, context: BuildContext):
        super().__init__(context)
        self.p = params.p
        self.max_span = params.max_span

    def forward(self, batch: Batch) -> Batch:
        eligible = self.eligible(batch)
        device = eligible.device
        batch_size = eligible.shape[0]
        count = eligible.sum(dim=1)  # [B] non-special tokens per sample
        # Span length uniform in [1, max_span], capped so at least one token survives.
        length = torch.randint(1, self.max_span + 1, (batch_size,), device=device)
        length = torch.minimum(length, (count - 1).clamp_min(0))
        start = (torch.rand(batch_size, device=device) * (count - length + 1).float()).long()
        active = torch.rand(batch_size, device=device) < self.p
        rank = eligible.long().cumsum(dim=1) - 1  # index of each eligible token among them
        delete = eligible & active[:, None] & (rank >= start[:, None]) & (rank < (start + length)[:, None])
        return delete_tokens(batch, delete, self.pad_token_id)


class RandomTokenReplacementParams(Params):
    """Parameters of ``random_token_replacement``."""

    p: float = Field(0.1, ge=0.0, le=1.0, description="Probability that each non-special token is replaced.")


class RandomTokenReplacement(_TokenAugmentation):
    """Replace each non-special token with probability ``p`` by a uniform random non-special token."""

    def __init__(self, params: RandomTokenReplacementParams, context: BuildContext):
        super().__init__(context)
        self.p = params.p

    def forward(self, batch: Batch) -> Batch:
        input_ids = batch["input_ids"]
        eligible = self.eligible(batch)
        replace = eligible & (torch.rand(input_ids.shape, device=input_ids.device) < self.p)
        replacement_ids = self.replacement_ids.to(input_ids.device)
        random_ids = replacement_ids[torch.randint(len(replacement_ids), input_ids.shape, device=input_ids.device)]
        return {**batch, "input_ids": torch.where(replace, random_ids, input_ids)}
