"""``simcse``: unsupervised SimCSE, contrasting two dropout-noised encodings of each text.

The two views are the same token sequences (no augmentation is needed: with ``num_views: 2``
and an empty augment list the engine passes the batch twice); the encoder in train mode
applies independent dropout to each copy, and that noise is the only difference between a
positive pair. The other sequences of the batch (gathered from every rank under DDP) are
the negatives. The loss is InfoNCE / NT-Xent over cosine similarities of the pooled
features (optionally passed through a small projection head used only in training).

References:
    - Gao, Yao and Chen, "SimCSE: Simple Contrastive Learning of Sentence Embeddings",
      EMNLP 2021, https://arxiv.org/abs/2104.08821
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from sslhub import Batch, BuildContext, Encoder, Objective, ObjectiveOutput, Params, gather_with_grad, process_rank
from sslhub_text.objectives.projection import projection_head


class SimCSEParams(Params):
    """Parameters of the ``simcse`` objective."""

    temperature: float = Field(0.05, gt=0.0, description="Softmax temperature over cosine similarities.")
    projection_dim: int = Field(
        0, ge=0, description="Output width of a Linear-Tanh-Linear projection head used in training; 0: no head."
    )
    symmetric: bool = Field(
        True, description="Average the loss of view 1 -> view 2 and view 2 -> view 1 (False: view 1 anchors only)."
    )
    gather_distributed: bool = Field(True, description="Use the other ranks' sequences as negatives under DDP.")


def simcse_logits_and_labels(
    anchors: Tensor, positives: Tensor, temperature: float, gather_distributed: bool = True
) -> tuple[Tensor, Tensor]:
    """Cosine-similarity logits of each anchor against every candidate, and the positive's index.

    Args:
        anchors: ``[B, D]`` this rank's first-view embeddings.
        positives: ``[B, D]`` this rank's second-view embeddings (row ``i`` pairs with anchor ``i``).
        temperature: divides the cosine similarities.
        gather_distributed: candidates are the second views of all ranks (``[B * world, D]``).

    Returns:
        ``(logits [B, B * world], labels int64 [B])``: anchor ``i``'s positive sits at column
        ``offset + i`` where ``offset`` is this rank's start in the gathered candidates.
    """
    if anchors.shape != positives.shape or anchors.dim() != 2:
        raise ValueError(
            f"simcse: anchors {tuple(anchors.shape)} and positives {tuple(positives.shape)} must be [B, D]"
        )
    anchors = F.normalize(anchors.float(), dim=1)
    positives = F.normalize(positives.float(), dim=1)
    candidates = gather_with_grad(positives) if gather_distributed else positives
    # gather_with_grad concatenates ranks in order, so this rank's rows start at rank * B.
    offset = process_rank() * anchors.shape[0] if gather_distributed else 0
    logits = anchors @ candidates.T / temperature
    labels = torch.arange(anchors.shape[0], device=anchors.device) + offset
    return logits, labels


class SimCSEObjective(Objective):
    """Unsupervised SimCSE on the encoder's pooled features.

    Both views go through the encoder as one concatenated ``[2B, L]`` batch: one forward pass,
    and each row still gets its own dropout mask.

    Args:
        params: :class:`SimCSEParams`.
        context: ``context.encoder`` sizes the optional projection head.

    Metrics: ``contrastive_accuracy``, the share of anchors whose most similar candidate is
    their own other view.
    """

    num_views = 2

    def __init__(self, params: SimCSEParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params = params or SimCSEParams()
        encoder = context.encoder if context is not None else None
        if encoder is None or not encoder.feature_dim:
            raise ValueError("simcse needs the built encoder (context.encoder) for its feature size")
        dim = int(encoder.feature_dim)
        self.head = projection_head(dim, params.projection_dim)

    def export_heads(self) -> dict[str, nn.Module]:
        """``projection``: the head the contrastive loss is computed on (identity without ``projection_dim``)."""
        return {"projection": self.head}

    def forward(self, views: list[Batch], encoder: Encoder) -> ObjectiveOutput:
        if len(views) != 2:
            raise ValueError(f"simcse needs 2 views, got {len(views)}")
        first, second = views
        if first["input_ids"].shape != second["input_ids"].shape:
            raise ValueError(
                f"simcse views must have the same shape, got {tuple(first['input_ids'].shape)} and "
                f"{tuple(second['input_ids'].shape)} (length-changing augmentations do not fit here)"
            )
        size = first["input_ids"].shape[0]
        joined = {key: torch.cat([first[key], second[key]]) for key in first if key in second}
        pooled = encoder(joined).pooled
        if pooled is None:
            raise ValueError(f"simcse needs pooled features; {type(encoder).__name__} returned none")
        embeddings = self.head(pooled)
        z1, z2 = embeddings[:size], embeddings[size:]
        logits, labels = simcse_logits_and_labels(z1, z2, self.params.temperature, self.params.gather_distributed)
        loss = F.cross_entropy(logits, labels)
        if self.params.symmetric:
            logits_back, labels_back = simcse_logits_and_labels(
                z2, z1, self.params.temperature, self.params.gather_distributed
            )
            loss = 0.5 * (loss + F.cross_entropy(logits_back, labels_back))
        with torch.no_grad():
            accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return ObjectiveOutput(loss=loss, metrics={"contrastive_accuracy": accuracy})
