"""``simclr``: contrast two augmented views of each image with NT-Xent.

References:
    - Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations"
      (SimCLR), ICML 2020, https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from sslhub import Batch, BuildContext, Encoder, Objective, ObjectiveOutput, Params
from sslhub_vision.heads.projection import ProjectionHead
from sslhub_vision.losses.ntxent import NTXentLoss


class SimCLRParams(Params):
    """Parameters of the ``simclr`` objective."""

    temperature: float = Field(0.5, gt=0.0, description="NT-Xent temperature")
    projection_dim: int = Field(128, gt=0, description="output size of the projection head")
    hidden_dim: int | None = Field(None, gt=0, description="hidden width of the head; default: encoder feature size")
    num_layers: int = Field(2, ge=1, le=4, description="linear layers in the projection head")
    batch_norm: bool = Field(True, description="BatchNorm in the projection head's hidden layers")
    gather_distributed: bool = Field(True, description="use the other ranks' embeddings as negatives under DDP")


class SimCLRObjective(Objective):
    """SimCLR: encoder -> projection head -> NT-Xent between two views.

    Both views go through the encoder as one concatenated batch (one forward pass; the
    BatchNorm statistics then cover both views, as in the reference implementation).

    Inputs: two views ``{"image": [B, C, S, S]}``. Metrics: ``contrastive_accuracy``, the
    share of anchors whose most similar candidate is their positive.
    """

    num_views = 2

    def __init__(self, params: SimCLRParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params = params or SimCLRParams()
        encoder = context.encoder if context is not None else None
        if encoder is None or not encoder.feature_dim:
            raise ValueError("simclr needs the built encoder (context.encoder) to size its projection head")
        self.head = ProjectionHead(
            encoder.feature_dim,
            params.hidden_dim or encoder.feature_dim,
            params.projection_dim,
            num_layers=params.num_layers,
            batch_norm=params.batch_norm,
        )
        self.loss_fn = NTXentLoss(params.temperature, gather_distributed=params.gather_distributed)

    def export_heads(self) -> dict[str, nn.Module]:
        """``projection``: the head the contrastive loss is computed on (``--include-head simclr.projection``)."""
        return {"projection": self.head}

    def forward(self, views: list[Batch], encoder: Encoder) -> ObjectiveOutput:
        if len(views) != 2:
            raise ValueError(f"simclr needs 2 views, got {len(views)}")
        batch = views[0]["image"].shape[0]
        joined = {key: torch.cat([view[key] for view in views]) for key in views[0]}
        projections = self.head(encoder(joined).pooled)
        logits, labels = self.loss_fn.logits_and_labels(projections[:batch], projections[batch:])
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return ObjectiveOutput(loss=loss, metrics={"contrastive_accuracy": accuracy})
