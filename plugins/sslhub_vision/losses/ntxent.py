"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR, usable on its own.

References:
    - Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations"
      (SimCLR), ICML 2020, https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslhub import gather_with_grad, process_rank


class NTXentLoss(nn.Module):
    """Contrastive loss between two views: each embedding must pick its partner among all others.

    For ``B`` pairs there are ``2B`` anchors (``2N`` candidates with ``N = B * world_size``
    when negatives are gathered across ranks). For anchor ``i`` with positive ``j``::

        loss_i = -log( exp(sim(i, j) / T) / sum_{k != i} exp(sim(i, k) / T) )

    where ``sim`` is cosine similarity; the loss is the mean over this rank's anchors.

    Args:
        temperature: ``T`` > 0; lower values weigh hard negatives more.
        gather_distributed: under ``torch.distributed``, use the other ranks' embeddings as
            extra negatives (gradients flow back through ``sslhub.gather_with_grad``, which
            sums them over ranks; DDP's averaging then matches a single-process run on the
            whole batch). Every rank must pass the same batch size ``B``.

    Shapes:
        z0, z1: ``[B, D]``, row ``b`` of each is a positive pair.
        output: scalar.

    Example::

        loss = NTXentLoss(temperature=0.5)(head(encoder(view0)), head(encoder(view1)))
    """

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def logits_and_labels(self, z0: Tensor, z1: Tensor) -> tuple[Tensor, Tensor]:
        """Similarity logits of every local anchor against every candidate, and the positives.

        Returns:
            logits ``[2B, 2N]`` (self-similarity set to ``-inf``) and labels ``[2B]``, the
            column of each anchor's positive. Rows ``0..B-1`` are the ``z0`` anchors,
            ``B..2B-1`` the ``z1`` anchors.
        """
        if z0.ndim != 2 or z0.shape != z1.shape:
            raise ValueError(f"z0 and z1 must both be [B, D] with equal shapes; got {list(z0.shape)}, {list(z1.shape)}")
        batch = z0.shape[0]
        z0 = F.normalize(z0, dim=1)
        z1 = F.normalize(z1, dim=1)
        all0, all1 = (gather_with_grad(z0), gather_with_grad(z1)) if self.gather_distributed else (z0, z1)
        total = all0.shape[0]
        offset = process_rank() * batch if self.gather_distributed and total != batch else 0
        local = torch.arange(batch, device=z0.device) + offset
        # anchors from view 0 look at [view 1 | view 0], anchors from view 1 at [view 0 | view 1]:
        # the positive is then at the same column (offset + b) for both halves.
        logits0 = z0 @ torch.cat((all1, all0)).T / self.temperature
        logits1 = z1 @ torch.cat((all0, all1)).T / self.temperature
        logits = torch.cat((logits0, logits1))  # [2B, 2N]
        self_column = torch.cat((local, local)) + total
        logits = logits.scatter(1, self_column[:, None], float("-inf"))
        labels = torch.cat((local, local))
        return logits, labels

    def forward(self, z0: Tensor, z1: Tensor) -> Tensor:
        logits, labels = self.logits_and_labels(z0, z1)
        return F.cross_entropy(logits, labels)
