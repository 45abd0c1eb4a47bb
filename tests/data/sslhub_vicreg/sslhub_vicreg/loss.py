"""The VICReg loss on two batches of embeddings, usable without sslhub's engine.

References:
    - Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
      Self-Supervised Learning", ICLR 2022, https://arxiv.org/abs/2105.04906
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def variance_term(z: Tensor, target: float = 1.0, eps: float = 1e-4) -> Tensor:
    """Hinge on the standard deviation of each dimension: ``mean_j max(0, target - sqrt(Var(z_j) + eps))``.

    Args:
        z: ``[N, D]`` embeddings (N >= 2).
        target: the standard deviation each dimension is pushed up to (gamma in the paper).
        eps: added to the variance so the square root has a finite gradient at zero variance.

    Returns:
        0-d tensor.
    """
    std = torch.sqrt(z.var(dim=0) + eps)  # unbiased variance, as in the paper
    return F.relu(target - std).mean()


def covariance_term(z: Tensor) -> Tensor:
    """Sum of squared off-diagonal covariances divided by the dimension: ``sum_{i != j} C_ij^2 / D``.

    Args:
        z: ``[N, D]`` embeddings (N >= 2).

    Returns:
        0-d tensor.
    """
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (n - 1)  # [D, D]
    off_diagonal = cov - torch.diag_embed(torch.diagonal(cov))
    return off_diagonal.pow(2).sum() / d


def vicreg_loss(
    z_a: Tensor,
    z_b: Tensor,
    *,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
    variance_target: float = 1.0,
    eps: float = 1e-4,
) -> tuple[Tensor, dict[str, Tensor]]:
    """VICReg: ``lambda * s(Z, Z') + mu * (v(Z) + v(Z')) + nu * (c(Z) + c(Z'))`` (equation 6 of the paper).

    ``s`` is the mean squared error between the two branches, ``v`` :func:`variance_term`
    and ``c`` :func:`covariance_term`. The default weights are the paper's (25, 25, 1).

    Args:
        z_a: ``[N, D]`` embeddings of the first view.
        z_b: ``[N, D]`` embeddings of the second view (same samples, same order).
        invariance_weight: lambda.
        variance_weight: mu.
        covariance_weight: nu.
        variance_target: gamma, the target standard deviation per dimension.
        eps: numerical floor inside the square root of the variance.

    Returns:
        The loss (0-d) and its unweighted terms ``invariance``, ``variance`` (both branches
        summed) and ``covariance`` (both branches summed), detached, for logging.

    Raises:
        ValueError: if the shapes differ or there are fewer than two samples (no variance).
    """
    if z_a.shape != z_b.shape or z_a.dim() != 2:
        raise ValueError(
            f"vicreg_loss needs two [N, D] tensors of the same shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}"
        )
    if z_a.shape[0] < 2:
        raise ValueError(f"vicreg_loss needs at least 2 samples to estimate variances, got {z_a.shape[0]}")
    invariance = F.mse_loss(z_a, z_b)
    variance = variance_term(z_a, variance_target, eps) + variance_term(z_b, variance_target, eps)
    covariance = covariance_term(z_a) + covariance_term(z_b)
    loss = invariance_weight * invariance + variance_weight * variance + covariance_weight * covariance
    terms = {"invariance": invariance.detach(), "variance": variance.detach(), "covariance": covariance.detach()}
    return loss, terms
