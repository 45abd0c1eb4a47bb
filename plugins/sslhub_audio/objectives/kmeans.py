"""Batched k-means in torch (k-means++ seeding, Lloyd iterations), deterministic in a seed.

Used to make HuBERT-style discrete targets from log-mel frames. Runs on whatever device the
data is on; distances are computed in chunks so memory stays ``O(chunk * K)``.

References:
    - Arthur and Vassilvitskii, "k-means++: The Advantages of Careful Seeding", SODA 2007.
"""

from __future__ import annotations

import torch
from torch import Tensor


def squared_distances(x: Tensor, centroids: Tensor) -> Tensor:
    """``||x_i - c_k||^2`` for ``x [N, D]`` and ``centroids [K, D]``; returns ``[N, K]`` (>= 0)."""
    distances = x.pow(2).sum(1, keepdim=True) - 2.0 * x @ centroids.T + centroids.pow(2).sum(1)[None, :]
    return distances.clamp_min(0.0)


def assign_clusters(x: Tensor, centroids: Tensor, chunk: int = 65536) -> Tensor:
    """Index of the nearest centroid for each row: ``x [N, D]`` -> ``[N]`` int64."""
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=x.device)
    x = x.float()
    centroids = centroids.float()
    return torch.cat([squared_distances(part, centroids).argmin(dim=1) for part in x.split(chunk)])


def kmeans(x: Tensor, num_clusters: int, iterations: int = 50, seed: int = 0, tolerance: float = 1e-6) -> Tensor:
    """Fit ``num_clusters`` centroids to ``x``.

    Args:
        x: ``[N, D]`` points (``N >= num_clusters``).
        num_clusters: ``K``.
        iterations: maximum Lloyd iterations (stops earlier when centroids stop moving).
        seed: seeds the k-means++ draws (a private generator: the global RNG is untouched).
        tolerance: stop when the largest squared centroid shift falls below this.

    Returns:
        ``[K, D]`` float32 centroids on ``x``'s device.
    """
    if x.dim() != 2:
        raise ValueError(f"kmeans expects points [N, D], got shape {tuple(x.shape)}")
    if num_clusters < 1:
        raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
    if x.shape[0] < num_clusters:
        raise ValueError(f"kmeans needs at least num_clusters={num_clusters} points, got {x.shape[0]}")
    x = x.float()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    count = x.shape[0]

    # k-means++ seeding: each new centre drawn with probability proportional to D(x)^2.
    first = int(torch.randint(0, count, (1,), generator=generator))
    centroids = [x[first]]
    nearest = squared_distances(x, x[first][None]).squeeze(1)
    for _ in range(1, num_clusters):
        weights = nearest.cpu().double()
        if float(weights.sum()) <= 0.0:  # all points coincide with centres already chosen
            index = int(torch.randint(0, count, (1,), generator=generator))
        else:
            index = int(torch.multinomial(weights / weights.sum(), 1, generator=generator))
        centroids.append(x[index])
        nearest = torch.minimum(nearest, squared_distances(x, x[index][None]).squeeze(1))
    centres = torch.stack(centroids)

    for _ in range(iterations):
        labels = assign_clusters(x, centres)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=num_clusters).to(x.dtype)
        updated = sums / counts.clamp_min(1.0)[:, None]
        empty = counts == 0
        if bool(empty.any()):
            # Re-seed empty clusters at the points farthest from their current centre.
            distance_to_own = squared_distances(x, centres).gather(1, labels[:, None]).squeeze(1)
            farthest = distance_to_own.topk(int(empty.sum())).indices
            updated[empty] = x[farthest]
        shift = (updated - centres).pow(2).sum(1).max()
        centres = updated
        if float(shift) < tolerance:
            break
    return centres
