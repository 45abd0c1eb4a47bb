"""``clip_contrastive``: clip-level contrast between two augmented views of each clip.

Both views of a batch (each drawn through the recipe's ``augment`` list: crops, SpecAugment
masks, the mel-axis stretch of ``spec_resized_crop``, noise) go through the encoder as one
batch; a small MLP head maps the pooled clip embeddings to the space where NT-Xent asks
each view to find its partner among the ``2B - 1`` other views. The other clips of the batch
are the negatives, so what two views of one clip share (the word) is kept and what the
augmentations change (level, pitch- and speed-like stretches, masked regions) is dropped;
nothing frame-level is predicted, so the objective has no boolean-mask indexing (no host
sync in the step).

References:
    - Saeed et al., "Contrastive Learning of General-Purpose Audio Representations" (COLA),
      ICASSP 2021, https://arxiv.org/abs/2010.10915
    - Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations"
      (SimCLR), ICML 2020, https://arxiv.org/abs/2002.05709 (projection head, NT-Xent)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from sslhub import Batch, BuildContext, Encoder, Objective, ObjectiveOutput, Params
from sslhub_audio.losses.ntxent import ntxent_logits


class ClipContrastiveParams(Params):
    """Parameters of ``clip_contrastive``."""

    temperature: float = Field(0.2, gt=0, description="NT-Xent temperature (lower weighs hard negatives more).")
    projection_dim: int = Field(128, gt=0, description="Output size of the projection head.")
    hidden_dim: int | None = Field(None, gt=0, description="Hidden width of the head; default: encoder feature size.")


def projection_head(input_dim: int, hidden_dim: int, output_dim: int) -> nn.Module:
    """Linear -> BatchNorm -> ReLU -> Linear, ``[B, input_dim] -> [B, output_dim]`` (SimCLR's head)."""
    return nn.Sequential(
        nn.Linear(input_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, output_dim),
    )


class ClipContrastiveObjective(Objective):
    """Encoder -> pooled ``[B, D]`` -> projection head -> NT-Xent between two views of each clip.

    Metrics: ``contrastive_accuracy``, the share of views whose most similar other view is
    their partner.
    """

    num_views = 2

    def __init__(self, params: ClipContrastiveParams, context: BuildContext):
        super().__init__()
        self.params = params
        encoder = context.encoder
        if encoder is None or not getattr(encoder, "feature_dim", None):
            raise ValueError("objective 'clip_contrastive' needs the built encoder (its feature_dim sizes the head)")
        dim = encoder.feature_dim
        self.head = projection_head(dim, params.hidden_dim or dim, params.projection_dim)

    def export_heads(self) -> dict[str, nn.Module]:
        """``projection``: the head the loss is computed on."""
        return {"projection": self.head}

    def forward(self, views: list[Batch], encoder: Encoder) -> ObjectiveOutput:
        """Args: views: two batches of the same clips, each with ``features [B, n_mels, T]``."""
        if len(views) != 2:
            raise ValueError(f"clip_contrastive needs 2 views, got {len(views)}")
        keys = [key for key in views[0] if isinstance(views[0][key], torch.Tensor)]
        joined = {key: torch.cat([view[key] for view in views]) for key in keys}
        batch = views[0]["features"].shape[0]
        projections = self.head(encoder(joined).pooled)
        logits, labels = ntxent_logits(projections[:batch], projections[batch:], self.params.temperature)
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return ObjectiveOutput(loss=loss, metrics={"contrastive_accuracy": accuracy})
