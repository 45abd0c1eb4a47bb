"""The Gumbel-softmax product quantizer of wav2vec 2.0.

A feature vector ``z`` is mapped to ``G`` groups of ``V`` logits ``l_{g,v}``; each group picks
one entry of its own codebook (``V`` vectors of ``code_dim / G`` values) and the ``G`` chosen
entries are concatenated: ``G * V`` learned vectors express ``V ** G`` codes (a product
quantizer). The choice is differentiable through the straight-through Gumbel-softmax
estimator: in training the forward pass uses the hard one-hot ``argmax_v (l_{g,v} + n_v)``
(Gumbel noise ``n``), the backward pass the gradient of ``softmax((l + n) / tau)``. Without
training the choice is ``argmax_v l_{g,v}`` (no noise).

The quantizer also returns ``p_bar_g``, the softmax of the logits (no noise) averaged over all
quantized frames of the batch, and in training over every rank's frames under ``torchrun``:
what the diversity loss and the codebook perplexity read
(:mod:`sslhub_audio.losses.codebook_diversity`).

References:
    - Baevski, Zhou, Mohamed and Auli, "wav2vec 2.0: A Framework for Self-Supervised Learning of
      Speech Representations", NeurIPS 2020, section 2 (quantization module) and equation 4,
      https://arxiv.org/abs/2006.11477
    - Jang, Gu and Poole, "Categorical Reparameterization with Gumbel-Softmax", ICLR 2017.
    - Jegou, Douze and Schmid, "Product Quantization for Nearest Neighbor Search", TPAMI 2011.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslhub import gather_with_grad, is_distributed


@dataclass
class Quantized:
    """What :class:`GumbelProductQuantizer` returns for ``N`` feature vectors.

    Attributes:
        vectors: ``[N, code_dim]`` the concatenated chosen entries (straight-through in training).
        codes: ``[N, G]`` int64 index of the chosen entry in each group.
        average_probabilities: ``[G, V]`` the softmax of the logits averaged over the ``N``
            vectors (and, in training, over every rank's vectors when distributed): ``p_bar`` of
            the diversity loss.
    """

    vectors: Tensor
    codes: Tensor
    average_probabilities: Tensor


class GumbelProductQuantizer(nn.Module):
    """wav2vec 2.0's quantization module: ``G`` groups of ``V`` entries, straight-through hard Gumbel-softmax.

    Args:
        input_dim: size of the feature vectors ``z``.
        groups: ``G``, codebooks concatenated per vector.
        entries: ``V``, entries per codebook.
        code_dim: size of a quantized vector (``G`` entries of ``code_dim / G`` values each).
    """

    def __init__(self, input_dim: int, groups: int, entries: int, code_dim: int):
        super().__init__()
        if code_dim % groups:
            raise ValueError(f"code_dim ({code_dim}) must be a multiple of the number of groups ({groups})")
        self.groups, self.entries = groups, entries
        self.to_logits = nn.Linear(input_dim, groups * entries)
        self.codebooks = nn.Parameter(torch.empty(groups, entries, code_dim // groups).uniform_())
        nn.init.normal_(self.to_logits.weight, std=1.0)
        nn.init.zeros_(self.to_logits.bias)

    def forward(self, features: Tensor, temperature: float | Tensor) -> Quantized:
        """Quantize ``features [N, input_dim]`` with Gumbel temperature ``temperature`` (training only).

        Returns:
            :class:`Quantized` with ``vectors [N, code_dim]``, ``codes [N, G]`` and
            ``average_probabilities [G, V]``.
        """
        logits = self.to_logits(features).float().reshape(-1, self.groups, self.entries)  # [N, G, V]
        probabilities = logits.softmax(dim=-1)
        if self.training:
            one_hot = straight_through_gumbel(logits, temperature)
        else:
            one_hot = F.one_hot(logits.argmax(dim=-1), self.entries).to(logits.dtype)
        vectors = torch.einsum("ngv,gvd->ngd", one_hot, self.codebooks.float()).flatten(1)
        average = probabilities.mean(dim=0)
        if self.training:  # every rank trains together; evaluation runs on the main process alone
            average = average_over_ranks(average, probabilities.shape[0])
        return Quantized(vectors=vectors, codes=one_hot.detach().argmax(dim=-1), average_probabilities=average)


def straight_through_gumbel(logits: Tensor, temperature: float | Tensor) -> Tensor:
    """Hard one-hot samples of ``softmax(logits)`` whose gradient is that of the Gumbel-softmax.

    Args:
        logits: ``[..., V]``.
        temperature: ``tau > 0`` of ``softmax((logits + gumbel noise) / tau)``.

    Returns:
        ``[..., V]``: exactly one-hot in the forward pass (``one_hot - soft.detach() + soft``).
    """
    uniform = torch.rand_like(logits).clamp_(min=torch.finfo(logits.dtype).tiny, max=1.0 - 1e-7)
    soft = ((logits - torch.log(-torch.log(uniform))) / temperature).softmax(dim=-1)
    hard = F.one_hot(soft.argmax(dim=-1), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


def average_over_ranks(average: Tensor, count: int) -> Tensor:
    """The mean of ``average`` ([G, V], the mean of ``count`` rows here) over every rank's rows.

    Weighted by each rank's ``count``; the gradient reaches this rank's ``average``. Without a
    process group it returns ``average``.
    """
    if not is_distributed():
        return average
    weighted = torch.cat([average.reshape(1, -1) * count, average.new_full((1, 1), float(count))], dim=1)
    gathered = gather_with_grad(weighted).sum(dim=0)  # [G * V + 1]
    return (gathered[:-1] / gathered[-1].clamp(min=1.0)).reshape(average.shape)
