"""``vicreg``: two augmented views, an expander, and the VICReg loss on the expanded embeddings.

Works with any modality and any encoder: it only reads ``pooled`` features.
"""

from __future__ import annotations

import torch
from pydantic import Field

from sslhub import Batch, BuildContext, Encoder, Objective, ObjectiveOutput, Params, gather_with_grad
from sslhub_vicreg.expander import Expander
from sslhub_vicreg.loss import vicreg_loss


class VICRegParams(Params):
    """Parameters of the ``vicreg`` objective (defaults: the paper's weights, a smaller expander)."""

    invariance_weight: float = Field(25.0, ge=0, description="lambda: weight of the mean squared error between views")
    variance_weight: float = Field(25.0, ge=0, description="mu: weight of the standard-deviation hinge")
    covariance_weight: float = Field(1.0, ge=0, description="nu: weight of the off-diagonal covariance penalty")
    variance_target: float = Field(1.0, gt=0, description="gamma: standard deviation each dimension is pushed to")
    eps: float = Field(1e-4, gt=0, description="added to variances before the square root")
    expander_dim: int = Field(256, gt=0, description="width of every expander layer (8192 in the paper)")
    expander_layers: int = Field(3, ge=1, le=6, description="linear layers in the expander")
    gather_distributed: bool = Field(
        True, description="compute variance and covariance over the embeddings of every rank under DDP"
    )


class VICRegObjective(Objective):
    """VICReg: encoder -> expander -> invariance + variance + covariance terms between two views.

    Both views go through the encoder and the expander separately, so each branch's
    BatchNorm statistics are its own (as in the reference implementation).

    Inputs: two views of any modality. Metrics: the unweighted ``invariance``, ``variance``
    and ``covariance`` terms, and ``embedding_std``, the mean standard deviation per
    dimension of the first view's embeddings (near 0 means collapse).
    """

    num_views = 2

    def __init__(self, params: VICRegParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params = params or VICRegParams()
        encoder = context.encoder if context is not None else None
        if encoder is None or not getattr(encoder, "feature_dim", 0):
            raise ValueError("vicreg needs the built encoder (context.encoder) to size its expander")
        self.expander = Expander(encoder.feature_dim, params.expander_dim, params.expander_layers)

    def forward(self, views: list[Batch], encoder: Encoder) -> ObjectiveOutput:
        if len(views) != 2:
            raise ValueError(f"vicreg needs 2 views, got {len(views)}")
        z_a = self.expander(encoder(views[0]).pooled)
        z_b = self.expander(encoder(views[1]).pooled)
        if self.params.gather_distributed:
            # Variance and covariance are batch statistics: estimate them on the global batch.
            z_a, z_b = gather_with_grad(z_a), gather_with_grad(z_b)
        p = self.params
        loss, terms = vicreg_loss(
            z_a,
            z_b,
            invariance_weight=p.invariance_weight,
            variance_weight=p.variance_weight,
            covariance_weight=p.covariance_weight,
            variance_target=p.variance_target,
            eps=p.eps,
        )
        with torch.no_grad():
            terms["embedding_std"] = z_a.std(dim=0).mean()
        return ObjectiveOutput(loss=loss, metrics=terms)
