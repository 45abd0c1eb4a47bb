"""A vector quantiser with an EMA-updated codebook: nearest code, straight-through gradient.

Usable alone::

    quantizer = VectorQuantizer(codebook_size=512, code_dim=64)
    result = quantizer(z)            # z: [..., 64]
    loss = reconstruction + 0.25 * result.commitment

Each vector ``z`` is replaced by its nearest codebook entry ``e_k`` (squared Euclidean
distance). The forward value is ``e_k``; the gradient flows to ``z`` unchanged
(``z + sg(e_k - z)``, the straight-through estimator). The codebook is not trained by
gradients: in training mode each call moves it by exponential moving averages of the
vectors assigned to each code (VQ-VAE-2's update, with Laplace smoothing of the counts)::

    N_k <- decay * N_k + (1 - decay) * n_k            # n_k: vectors assigned to code k
    m_k <- decay * m_k + (1 - decay) * sum_{z -> k} z
    e_k <- m_k / N~_k,   N~_k = (N_k + eps) / (sum N + K eps) * sum N

A code whose moving count ``N_k`` falls below ``dead_code_threshold`` is *dead*: it is
restarted at a random vector of the current batch (count reset to the threshold), so a
collapsed codebook recovers instead of silently wasting entries. Under DistributedDataParallel
the counts and sums are summed over every process and the restart vectors come from the first
one, so all replicas keep the same codebook. No step reads a value back to the host.

References:
    - van den Oord et al., "Neural Discrete Representation Learning", NeurIPS 2017,
      https://arxiv.org/abs/1711.00937 (straight-through estimator, commitment loss; appendix: EMA)
    - Razavi et al., "Generating Diverse High-Fidelity Images with VQ-VAE-2", NeurIPS 2019
    - Dhariwal et al., "Jukebox", 2020 (restarting dead codes at encoder outputs)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass
class Quantized:
    """What :class:`VectorQuantizer` returns.

    Attributes:
        quantized: ``[..., D]`` the nearest codes, with the straight-through gradient to the input.
        codes: ``[...]`` int64 index of each vector's code.
        commitment: 0-d ``mean ||z - sg(e)||^2`` per element (multiply by beta in the loss).
        counts: ``[K]`` float how many vectors chose each code in this call (summed over every
            process when a training call runs under DistributedDataParallel).
    """

    quantized: Tensor
    codes: Tensor
    commitment: Tensor
    counts: Tensor


def nearest_codes(vectors: Tensor, codebook: Tensor) -> Tensor:
    """Index of the nearest codebook row of each vector (squared Euclidean distance).

    Args:
        vectors: ``[N, D]``.
        codebook: ``[K, D]``.

    Returns:
        ``[N]`` int64 in ``[0, K)``; ties go to the lowest index.
    """
    distances = vectors.square().sum(1, keepdim=True) - 2 * vectors @ codebook.t() + codebook.square().sum(1)[None, :]
    return distances.argmin(dim=1)


def codebook_perplexity(counts: Tensor) -> Tensor:
    """``exp(entropy)`` of the code distribution given by ``counts [K]``: 1 when one code takes
    everything, ``K`` when all are used equally (0-d float; 0 counts give 0)."""
    total = counts.sum()
    probabilities = counts / total.clamp_min(1e-12)
    entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum()
    return torch.where(total > 0, entropy.exp(), torch.zeros_like(entropy))


class VectorQuantizer(nn.Module):
    """Nearest-code quantisation of ``[..., D]`` vectors with an EMA codebook and dead-code restarts.

    Args:
        codebook_size: ``K`` codes.
        code_dim: ``D``.
        decay: EMA decay of the counts and sums (0.99 in VQ-VAE-2).
        dead_code_threshold: a code whose moving count falls below this is restarted.
        epsilon: Laplace smoothing of the counts.
    """

    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        decay: float = 0.99,
        dead_code_threshold: float = 1.0,
        epsilon: float = 1e-5,
    ):
        super().__init__()
        if codebook_size < 1 or code_dim < 1:
            raise ValueError(f"codebook_size and code_dim must be >= 1, got {codebook_size} and {code_dim}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if dead_code_threshold < 0:
            raise ValueError(f"dead_code_threshold must be >= 0, got {dead_code_threshold}")
        self.decay, self.dead_code_threshold, self.epsilon = decay, dead_code_threshold, epsilon
        codebook = torch.randn(codebook_size, code_dim)
        self.register_buffer("codebook", codebook)
        self.register_buffer("ema_count", torch.ones(codebook_size))
        self.register_buffer("ema_sum", codebook.clone())

    @property
    def codebook_size(self) -> int:
        return self.codebook.shape[0]

    def forward(self, z: Tensor) -> Quantized:
        """Quantise ``z [..., D]``; in training mode (with gradients on) also update the codebook."""
        if z.shape[-1] != self.codebook.shape[1]:
            raise ValueError(f"expected vectors of size {self.codebook.shape[1]}, got shape {tuple(z.shape)}")
        flat = z.reshape(-1, z.shape[-1]).float()
        codes = nearest_codes(flat.detach(), self.codebook)
        # scatter rather than F.one_hot, which checks the index range on the host (a device sync)
        one_hot = flat.new_zeros(flat.shape[0], self.codebook_size).scatter_(1, codes[:, None], 1.0)
        counts = one_hot.sum(0)
        quantized = self.codebook[codes]
        commitment = (flat - quantized.detach()).square().mean()
        if self.training and torch.is_grad_enabled():
            self._update(flat.detach(), one_hot, counts)
        straight_through = flat + (quantized - flat).detach()
        return Quantized(straight_through.view_as(z).to(z.dtype), codes.view(z.shape[:-1]), commitment, counts)

    @torch.no_grad()
    def _update(self, flat: Tensor, one_hot: Tensor, counts: Tensor) -> None:
        sums = one_hot.t() @ flat
        restart = flat[torch.randint(flat.shape[0], (self.codebook_size,), device=flat.device)]
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
            dist.broadcast(restart, src=0)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        dead = (self.ema_count < self.dead_code_threshold)[:, None]
        threshold = torch.full_like(self.ema_count, max(self.dead_code_threshold, self.epsilon))
        self.ema_count.copy_(torch.where(dead[:, 0], threshold, self.ema_count))
        self.ema_sum.copy_(torch.where(dead, restart * threshold[:, None], self.ema_sum))
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
