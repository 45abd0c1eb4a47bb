"""``split_contrastive``: the two halves of one text's words must find each other among the batch's.

Each text's words are dealt at random into two disjoint halves (a word's ``##`` pieces stay
with it); each half is encoded on its own and InfoNCE over the pooled features pairs a half
with its complement, the other texts' halves being the negatives. The halves share no
token, so, unlike SimCSE's dropout views or token deletion (where most tokens are shared and
matching them is lexical), the encoder can only pair them by learning which words occur
together: topic from co-occurrence, the signal that LSA and word2vec draw from a corpus.
A text with a single word is kept whole in both halves.

References:
    - the inverse Cloze task of Lee, Chang and Toutanova, "Latent Retrieval for Weakly
      Supervised Open Domain Question Answering", ACL 2019, https://arxiv.org/abs/1906.00300
      (a sentence and its context as a positive pair), here at the scale of words in a text.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from sslhub import Batch, BuildContext, Encoder, Objective, ObjectiveOutput, Params
from sslhub_text.augmentations.tokens import delete_tokens
from sslhub_text.objectives.mlm import word_start_positions
from sslhub_text.objectives.projection import projection_head
from sslhub_text.objectives.simcse import simcse_logits_and_labels


class SplitContrastiveParams(Params):
    """Parameters of the ``split_contrastive`` objective."""

    temperature: float = Field(0.05, gt=0.0, description="Softmax temperature over cosine similarities.")
    projection_dim: int = Field(
        0, ge=0, description="Output width of a Linear-Tanh-Linear projection head used in training; 0: no head."
    )
    whole_words: bool = Field(True, description="Deal whole words (a word's ## pieces follow it); False: tokens.")
    gather_distributed: bool = Field(True, description="Use the other ranks' halves as negatives under DDP.")

    def modality_needs(self) -> frozenset[str]:
        """``word_continuations`` with ``whole_words``: a word's pieces are found from the modality."""
        return frozenset({"word_continuations"}) if self.whole_words else frozenset()


def trim_padding_columns(batch: Batch) -> Batch:
    """``batch`` without its trailing columns that are padding in every row (right padding).

    A half keeps about half of its text's tokens but the full batch width; cutting the empty
    end roughly halves the encoder's cost per half. The real positions' states do not change
    (an encoder masks padding or, if causal, never lets a real position see a later one). Only
    on the CPU: finding the width reads a value back, which would stall an accelerator's queue.
    """
    mask = batch["attention_mask"]
    if mask.device.type != "cpu" or mask.shape[1] == 0:
        return batch
    width = max(int(mask.sum(dim=1).max()), 1)
    return {key: value[:, :width] for key, value in batch.items()}


def split_halves(eligible: Tensor, word_starts: Tensor) -> tuple[Tensor, Tensor]:
    """Which tokens each half deletes: a random, complementary deal of each row's words.

    Args:
        eligible: ``bool [B, L]`` content tokens (not special, not padding).
        word_starts: ``int64 [B, L]`` index of the first piece of each position's word
            (a position's own index when words are single tokens).

    Returns:
        ``(delete_first, delete_second)``, ``bool [B, L]`` each. A content token is deleted
        from exactly one half, except in a row whose deal left a half empty: that row keeps
        all its tokens in both halves.
    """
    coin = torch.rand(eligible.shape, device=eligible.device) < 0.5
    to_second = coin.gather(1, word_starts) & eligible  # a word's pieces follow its first piece's coin
    to_first = eligible & ~to_second
    splittable = to_first.any(dim=1, keepdim=True) & to_second.any(dim=1, keepdim=True)
    return to_second & splittable, to_first & splittable


class SplitContrastiveObjective(Objective):
    """InfoNCE between the two complementary word halves of each text, on pooled features.

    Both halves go through the encoder as one ``[2B, L]`` batch.

    Args:
        params: :class:`SplitContrastiveParams`.
        context: ``context.encoder`` sizes the optional head; ``context.modality`` gives the
            special and word-continuation token ids.

    Metrics: ``contrastive_accuracy``, the share of halves whose most similar candidate is
    their own complement.
    """

    num_views = 1

    def __init__(self, params: SplitContrastiveParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params = params or SplitContrastiveParams()
        encoder = context.encoder if context is not None else None
        modality = context.modality if context is not None else None
        if encoder is None or not encoder.feature_dim or modality is None:
            raise ValueError("split_contrastive needs the built encoder and text modality in its context")
        info = modality.info()
        self.pad_token_id = int(info.needed("pad_token_id", "split_contrastive objective"))
        vocab_size = int(info.needed("vocab_size", "split_contrastive objective"))
        is_special = torch.zeros(vocab_size, dtype=torch.bool)
        is_special[torch.tensor(sorted(set(info.special_token_ids or ()) | {self.pad_token_id}))] = True
        is_continuation = torch.zeros(vocab_size, dtype=torch.bool)
        if params.whole_words:
            # recipe validation has checked that the modality declares word_continuations
            is_continuation[torch.tensor(modality.continuation_token_ids(), dtype=torch.int64)] = True
        self.register_buffer("is_special", is_special, persistent=False)
        self.register_buffer("is_continuation", is_continuation, persistent=False)
        dim = int(encoder.feature_dim)
        self.head = projection_head(dim, params.projection_dim)

    def export_heads(self) -> dict[str, nn.Module]:
        """``projection``: the head the contrastive loss is computed on (identity without ``projection_dim``)."""
        return {"projection": self.head}

    def halves(self, batch: Batch) -> tuple[Batch, Batch]:
        """The two complementary halves of ``batch``, same shapes (deleted tokens shift left, pad the end)."""
        input_ids = batch["input_ids"]
        eligible = batch["attention_mask"].bool() & ~self.is_special[input_ids]
        word_starts = word_start_positions(input_ids, eligible, self.is_continuation)
        delete_first, delete_second = split_halves(eligible, word_starts)
        return (
            delete_tokens(batch, delete_first, self.pad_token_id),
            delete_tokens(batch, delete_second, self.pad_token_id),
        )

    def forward(self, views: list[Batch], encoder: Encoder) -> ObjectiveOutput:
        first, second = self.halves(views[0])
        size = first["input_ids"].shape[0]
        joined = trim_padding_columns(
            {key: torch.cat([first[key], second[key]]) for key in ("input_ids", "attention_mask")}
        )
        pooled = encoder(joined).pooled
        if pooled is None:
            raise ValueError(f"split_contrastive needs pooled features; {type(encoder).__name__} returned none")
        embeddings = self.head(pooled)
        z1, z2 = embeddings[:size], embeddings[size:]
        gather = self.params.gather_distributed
        logits, labels = simcse_logits_and_labels(z1, z2, self.params.temperature, gather)
        logits_back, labels_back = simcse_logits_and_labels(z2, z1, self.params.temperature, gather)
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits_back, labels_back))
        with torch.no_grad():
            accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return ObjectiveOutput(loss=loss, metrics={"contrastive_accuracy": accuracy})
