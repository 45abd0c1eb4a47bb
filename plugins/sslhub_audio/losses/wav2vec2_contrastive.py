"""wav2vec 2.0's contrastive loss over distractors from the same utterance, usable on its own.

At each masked frame ``t`` the context vector ``c_t`` must pick its quantized target ``q_t``
among ``K`` distractors ``Q_t``, quantized targets of other masked frames of the same
utterance drawn uniformly (paper equation 3)::

    L_m = -log( exp(sim(c_t, q_t) / kappa) / sum_{q in {q_t} + Q_t} exp(sim(c_t, q) / kappa) )

with cosine similarity ``sim`` and temperature ``kappa``. A distractor with the same code as
the target is left out (fairseq's ``neg_is_pos``): it is the target.

References:
    - Baevski, Zhou, Mohamed and Auli, "wav2vec 2.0: A Framework for Self-Supervised Learning of
      Speech Representations", NeurIPS 2020, section 3.2, https://arxiv.org/abs/2006.11477
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sample_distractors(mask: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """For each masked frame, ``count`` other masked frames of the same utterance, drawn uniformly.

    Args:
        mask: ``[B, T']`` bool; the ``M`` masked frames are numbered in row-major order (as ``z[mask]``).
        count: ``K`` distractors per frame (drawn with replacement).
        generator: optional generator for reproducible draws (held-out metrics).

    Returns:
        ``[M, K]`` int64 indices into the ``M`` masked frames. A frame alone in its utterance
        gets its own index (the loss leaves such a distractor out).
    """
    counts = mask.sum(dim=1)  # [B]
    offsets = counts.cumsum(0) - counts
    rows = mask.nonzero()[:, 0]  # [M]
    own = torch.arange(rows.shape[0], device=mask.device) - offsets[rows]  # position within its row
    others = (counts[rows] - 1).clamp(min=0)  # [M]
    draw_device = generator.device if generator is not None else mask.device
    uniform = torch.rand(rows.shape[0], count, device=draw_device, generator=generator).to(mask.device)
    drawn = (uniform * others[:, None]).floor().long()  # in [0, others - 1]
    drawn = drawn + ((drawn >= own[:, None]) & (others[:, None] > 0)).long()  # skip the frame itself
    return offsets[rows][:, None] + drawn


def contrastive_logits(
    predictions: Tensor, targets: Tensor, distractors: Tensor, codes: Tensor, temperature: float
) -> Tensor:
    """Cosine similarities over ``kappa`` of each prediction with its target (column 0) and its distractors.

    Args:
        predictions: ``[M, F]`` context vectors at the masked frames.
        targets: ``[M, F]`` quantized targets of the same frames.
        distractors: ``[M, K]`` indices into ``targets``.
        codes: ``[M, G]`` each target's code; a distractor with its frame's code gets ``-inf``.
        temperature: ``kappa``.

    Returns:
        ``[M, K + 1]`` float logits; the true target is class 0.
    """
    candidates = torch.cat([targets[:, None], targets[distractors]], dim=1)  # [M, K + 1, F]
    logits = F.cosine_similarity(predictions.float()[:, None], candidates.float(), dim=-1) / temperature
    same_code = (codes[distractors] == codes[:, None]).all(dim=-1)  # [M, K]
    return torch.cat([logits[:, :1], logits[:, 1:].masked_fill(same_code, float("-inf"))], dim=1)


def contrastive_loss(logits: Tensor) -> tuple[Tensor, Tensor]:
    """``(L_m, accuracy)``: mean cross-entropy with class 0, and the share of rows where class 0 wins."""
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    accuracy = (logits.argmax(dim=-1) == 0).float().mean()
    return F.cross_entropy(logits, labels), accuracy
