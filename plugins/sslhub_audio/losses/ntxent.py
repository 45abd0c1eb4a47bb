"""NT-Xent between two views of each clip (the SimCLR loss), usable on its own.

References:
    - Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations"
      (SimCLR), ICML 2020, https://arxiv.org/abs/2002.05709
    - Saeed et al., "Contrastive Learning of General-Purpose Audio Representations" (COLA),
      ICASSP 2021, https://arxiv.org/abs/2010.10915 (segments of the same clip as positives,
      the other clips of the batch as negatives)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def ntxent_logits(z0: Tensor, z1: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Cosine-similarity logits of every embedding against all others, and each one's positive.

    Args:
        z0: ``[B, P]`` embeddings of the first views.
        z1: ``[B, P]`` embeddings of the second views; row ``b`` is the positive of ``z0[b]``.
        temperature: ``T > 0`` dividing the cosine similarities.

    Returns:
        logits ``[2B, 2B]`` (an embedding's similarity with itself set to ``-inf``) and
        labels ``[2B]``, the column of each row's positive.
    """
    if z0.ndim != 2 or z0.shape != z1.shape:
        raise ValueError(f"z0 and z1 must both be [B, P] with equal shapes; got {list(z0.shape)}, {list(z1.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    batch = z0.shape[0]
    z = F.normalize(torch.cat((z0, z1)).float(), dim=1)  # [2B, P]
    logits = z @ z.T / temperature
    eye = torch.eye(2 * batch, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))
    index = torch.arange(batch, device=z.device)
    labels = torch.cat((index + batch, index))  # view 0's partner is in the second half and back
    return logits, labels


def ntxent_loss(z0: Tensor, z1: Tensor, temperature: float = 0.2) -> Tensor:
    """Mean NT-Xent over the ``2B`` anchors: each embedding must pick its partner among the others.

    Shapes: ``z0, z1 [B, P]`` -> scalar. Example::

        loss = ntxent_loss(head(encoder(view0).pooled), head(encoder(view1).pooled))
    """
    logits, labels = ntxent_logits(z0, z1, temperature)
    return F.cross_entropy(logits, labels)
