"""``scarf``: contrastive learning of table rows under random feature corruption (tabular only).

Each row of the batch is paired with a corrupted copy of itself: a random ``corruption_rate``
share of its columns is replaced by the value the same column has in another, randomly drawn
row of the batch (a draw from that column's empirical marginal). The encoder embeds both; a
small projection head maps them to the space where an InfoNCE loss pulls each row towards its
own corrupted copy and away from the other rows' copies. Only the encoder is kept.

Unlike the denoising autoencoder, nothing has to be rebuilt column by column: the encoder
only has to keep what tells rows apart after a large share of their values are swapped out.

``positive: neighbour`` builds each row's positive from its nearest *other* row of the batch
(Euclidean, in the standardised columns) instead of from the row itself, so neighbouring rows
are pulled together and what the encoder keeps is the table's neighbourhood structure rather
than each row's identity. On a table with many rows per class (UCI's pen digits, 7,494 rows)
that lifted a 5-shot probe on unseen writers far above SCARF's; on a few hundred rows the
in-batch neighbours are too far apart to help (benchmarks/realdata/RESULTS-tab3.md).

References:
    - Bahri, Jiang, Tay and Metzler, "SCARF: Self-Supervised Contrastive Learning using Random
      Feature Corruption", ICLR 2022, https://arxiv.org/abs/2106.15147
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from sslhub import Batch, BuildContext, Encoder, Objective, ObjectiveOutput, Params
from sslhub_autoencoder.corruption import swap_columns


class ScarfParams(Params):
    """Parameters of the ``scarf`` objective."""

    corruption_rate: float = Field(
        0.6,
        ge=0.0,
        lt=1.0,
        description="share of the positive's columns replaced by another row's value (paper: 0.6); "
        "0 only with positive: neighbour",
    )
    positive: Literal["self", "neighbour"] = Field(
        "self",
        description="the row each positive is corrupted from: the row itself (SCARF), or its nearest other row "
        "of the batch (pulls neighbouring rows together)",
    )
    temperature: float = Field(1.0, gt=0.0, description="softmax temperature over cosine similarities (paper: 1.0)")
    projection_dim: int = Field(
        64, ge=0, description="width of the two-layer projection head used only in training; 0: no head"
    )
    target: str = Field("vector", min_length=1, description="the batch key holding the rows [B, D]")

    @model_validator(mode="after")
    def _a_row_needs_corrupting_to_be_its_own_positive(self) -> ScarfParams:
        if self.positive == "self" and self.corruption_rate == 0:
            raise ValueError("corruption_rate 0 with positive: self makes each positive the row itself; raise it")
        return self


def nearest_other_rows(rows: Tensor) -> Tensor:
    """``[B, D]``: for each row, the nearest other row of ``rows`` (Euclidean; on the device, no host sync)."""
    distances = torch.cdist(rows.float(), rows.float())
    distances.fill_diagonal_(float("inf"))
    return rows[distances.argmin(dim=1)]


def info_nce(anchors: Tensor, positives: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Symmetric InfoNCE over cosine similarities; row ``i`` of each side is the other's positive.

    Args:
        anchors: ``[B, E]``; positives: ``[B, E]``.
        temperature: divides the cosine similarities.

    Returns:
        ``(loss, accuracy)``: the mean of both directions' cross-entropies, and the share of
        anchors whose most similar candidate is their own positive (0-d tensors).
    """
    logits = F.normalize(anchors.float(), dim=1) @ F.normalize(positives.float(), dim=1).T / temperature
    labels = torch.arange(logits.shape[0], device=logits.device)
    loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    with torch.no_grad():
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
    return loss, accuracy


class ScarfObjective(Objective):
    """SCARF on the encoder's pooled features.

    Args:
        params: :class:`ScarfParams`.
        context: ``context.encoder`` sizes the projection head.

    Metrics: ``contrastive_accuracy``, the share of rows whose corrupted copy is their nearest.
    """

    def __init__(self, params: ScarfParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params = params or ScarfParams()
        encoder = context.encoder if context is not None else None
        if encoder is None or not encoder.feature_dim:
            raise ValueError("scarf needs the built encoder (context.encoder) for its feature size")
        dim = int(encoder.feature_dim)
        self.head: nn.Module = (
            nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, params.projection_dim))
            if params.projection_dim
            else nn.Identity()
        )

    def export_heads(self) -> dict[str, nn.Module]:
        """``projection``: the head the contrastive loss is computed on (identity without ``projection_dim``)."""
        return {"projection": self.head}

    def forward(self, views: list[Batch], encoder: Encoder) -> ObjectiveOutput:
        batch = views[0]
        key = self.params.target
        if key not in batch or batch[key].dim() != 2:
            raise ValueError(f"scarf needs {key!r} rows [B, D] in the batch, got keys {sorted(batch)}")
        rows = batch[key]
        source = nearest_other_rows(rows) if self.params.positive == "neighbour" else rows
        corrupted = swap_columns(source, self.params.corruption_rate) if self.params.corruption_rate else source
        # One forward pass over both: a batch-norm encoder then sees one batch's statistics.
        pooled = encoder({**batch, key: torch.cat([rows, corrupted])}).pooled
        if pooled is None:
            raise ValueError(f"scarf needs pooled features; {type(encoder).__name__} returned none")
        embeddings = self.head(pooled)
        loss, accuracy = info_nce(embeddings[: rows.shape[0]], embeddings[rows.shape[0] :], self.params.temperature)
        return ObjectiveOutput(loss=loss, metrics={"contrastive_accuracy": accuracy})
