"""wav2vec 2.0's codebook diversity loss and the codebook perplexity, usable on their own.

Both read ``p_bar``: ``[G, V]``, the softmax over each group's ``V`` codebook entries averaged
over the quantized frames of a batch. The diversity loss (paper equation 4) is the negative
entropy, normalised by ``G V``; minimising it spreads the use over all entries. The perplexity
``exp(H(p_bar_g))`` averaged over groups reads as the number of entries in use.

References:
    - Baevski, Zhou, Mohamed and Auli, "wav2vec 2.0: A Framework for Self-Supervised Learning of
      Speech Representations", NeurIPS 2020, equation 4, https://arxiv.org/abs/2006.11477
"""

from __future__ import annotations

import torch
from torch import Tensor


def diversity_loss(average_probabilities: Tensor) -> Tensor:
    """wav2vec 2.0's codebook diversity loss (equation 4): ``1 / (G V) * sum_g sum_v p log p``.

    Args:
        average_probabilities: ``[G, V]`` ``p_bar``, each row summing to 1.

    Returns:
        0-d; ``-log(V) / V`` at uniform use, 0 when each group uses one entry.
    """
    groups, entries = average_probabilities.shape
    entropy = -(average_probabilities * torch.log(average_probabilities.clamp(min=1e-7))).sum(dim=-1)  # [G]
    return -entropy.sum() / (groups * entries)


def codebook_perplexity(average_probabilities: Tensor) -> Tensor:
    """``exp(H(p_bar_g))`` averaged over the ``G`` groups: 1 (collapsed) to ``V`` (uniform). 0-d."""
    entropy = -(average_probabilities * torch.log(average_probabilities.clamp(min=1e-7))).sum(dim=-1)
    return entropy.exp().mean()
