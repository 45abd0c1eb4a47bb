"""KL divergence of a diagonal Gaussian from the standard normal prior (the VAE regulariser).

References:
    - Kingma and Welling, "Auto-Encoding Variational Bayes", ICLR 2014,
      https://arxiv.org/abs/1312.6114 (appendix B gives the closed form used here)
"""

from __future__ import annotations

from torch import Tensor


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` per sample, summed over every latent dimension.

    ``0.5 * sum(mu**2 + exp(logvar) - 1 - logvar)``, in nats.

    Args:
        mu: ``[B, ...]`` posterior means.
        logvar: ``[B, ...]`` posterior log-variances, same shape as ``mu``.

    Returns:
        ``[B]`` KL divergence of each sample's posterior from the prior.

    Raises:
        ValueError: the shapes differ, or there is no batch dimension.
    """
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have the same shape, got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    if mu.dim() < 1:
        raise ValueError("mu and logvar need a batch dimension")
    per_element = 0.5 * (mu.float().square() + logvar.float().exp() - 1.0 - logvar.float())
    return per_element.flatten(1).sum(dim=1) if mu.dim() > 1 else per_element
