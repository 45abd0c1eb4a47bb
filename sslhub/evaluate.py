"""Modality-agnostic probes of frozen features: kNN, a linear probe and few-shot linear probes.

Each takes features of the two sides of a labeled split (probe-train, probe-test);
:mod:`sslhub.evaluation` runs them for the trained encoder, the same encoder at random init
and the modality's raw-input features.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sslhub.components import Batch, Encoder, Modality


@torch.no_grad()
def embed_dataset(
    encoder: Encoder,
    modality: Modality,
    dataset: Dataset,
    device: torch.device,
    batch_size: int = 256,
    to_device: Callable[[Batch], Batch] | None = None,
) -> tuple[Tensor, Tensor]:
    """Pooled features ``[N, D]`` (float32, CPU) and integer labels ``[N]`` of a labeled dataset."""
    was_training = encoder.training
    encoder.eval()
    features, labels = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=modality.collate)
    for batch in loader:
        labels.append(batch.pop("label").long().cpu())
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        batch = modality.on_device(batch)
        features.append(encoder(batch).pooled.float().cpu())
    encoder.train(was_training)
    return torch.cat(features), torch.cat(labels)


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Accuracy of a cosine-similarity kNN with similarity-weighted votes (``exp(sim / T)``).

    Args:
        train_features: ``[N, D]``; train_labels: ``[N]`` int.
        test_features: ``[M, D]``; test_labels: ``[M]`` int.
    """
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, train.shape[0])
    correct = 0
    for start in range(0, test.shape[0], 1024):
        similarity = test[start : start + 1024] @ train.T
        top_sim, top_index = similarity.topk(k, dim=1)
        votes = torch.zeros(top_sim.shape[0], num_classes)
        votes.scatter_add_(1, train_labels[top_index], (top_sim / temperature).exp())
        correct += (votes.argmax(dim=1) == test_labels[start : start + 1024]).sum().item()
    return correct / test.shape[0]


def linear_probe_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    epochs: int = 100,
    weight_decay: float | Sequence[float] = 1e-4,
    seed: int = 0,
) -> float:
    """Test accuracy of a multinomial logistic regression fitted with L-BFGS on standardised features.

    ``weight_decay`` may be a sequence of candidates: each is fitted on a seeded 80% of the
    training features and scored on the other 20%, and the best (the larger on ties) is refitted
    on all of them. The test features are never used to choose.
    """
    if isinstance(weight_decay, Sequence):
        weight_decay = select_weight_decay(train_features, train_labels, list(weight_decay), epochs, seed)
    mean, std = train_features.mean(0), train_features.std(0).clamp_min(1e-6)
    train = ((train_features - mean) / std).double()
    test = ((test_features - mean) / std).double()
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(train.shape[1], num_classes, generator=generator, dtype=torch.float64) * 0.01
    weight.requires_grad_(True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=epochs, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(train @ weight + bias, train_labels) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return ((test @ weight + bias).argmax(1) == test_labels).double().mean().item()


def select_weight_decay(
    features: Tensor, labels: Tensor, candidates: list[float], epochs: int = 100, seed: int = 0
) -> float:
    """The candidate weight decay with the best accuracy on a seeded 20% validation part of ``features``."""
    if not candidates:
        raise ValueError("weight_decay candidates must not be empty")
    if len(candidates) == 1:
        return float(candidates[0])
    order = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(seed + 7919))
    cut = max(1, int(round(features.shape[0] * 0.8)))
    fit, check = order[:cut], order[cut:]
    if check.numel() == 0:
        return float(max(candidates))
    scores = {
        float(decay): linear_probe_accuracy(
            features[fit], labels[fit], features[check], labels[check], epochs, float(decay), seed
        )
        for decay in candidates
    }
    best = max(scores.values())
    return max(decay for decay, score in scores.items() if score == best)


@dataclass(frozen=True)
class FewShotResult:
    """Accuracy of few-shot linear probes at one ``shots`` per class over seeded draws.

    Attributes:
        shots: labeled probe-train samples per class.
        mean: mean test accuracy over the draws.
        std: standard deviation over the draws (0 for one draw).
    """

    shots: int
    mean: float
    std: float


def few_shot_draw(labels: Tensor, classes: Tensor, shots: int, seed: int) -> Tensor:
    """Indices of ``shots`` samples of each class in ``classes``, drawn with ``seed``.

    Args:
        labels: ``[N]`` int labels; every class in ``classes`` has at least ``shots`` of them.
        classes: ``[C]`` the classes to draw from.

    Returns:
        ``[C * shots]`` indices into ``labels``, class by class.
    """
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in classes.tolist():
        members = (labels == cls).nonzero().flatten()
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:shots]])
    return torch.cat(chosen)


def few_shot_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    shots: int,
    draws: int = 5,
    seed: int = 0,
    epochs: int = 100,
    weight_decay: float = 1e-2,
) -> FewShotResult:
    """Linear probes fitted on ``shots`` probe-train samples per class, scored on the whole test side.

    Each of ``draws`` draws takes its own seeded sample (``seed``, ``seed + 1``, ...), so the
    result is the same for the same seed. The classes are those seen on either side; each
    must have ``shots`` probe-train samples (see :func:`too_few_for_shots`).

    Args:
        train_features: ``[N, D]``; train_labels: ``[N]`` int.
        test_features: ``[M, D]``; test_labels: ``[M]`` int.
    """
    classes = torch.unique(torch.cat([train_labels, test_labels]))
    scores = []
    with _one_thread():
        for draw in range(draws):
            chosen = few_shot_draw(train_labels, classes, shots, seed + draw)
            scores.append(
                linear_probe_accuracy(
                    train_features[chosen],
                    train_labels[chosen],
                    test_features,
                    test_labels,
                    epochs,
                    weight_decay,
                    seed + draw,
                )
            )
    spread = torch.tensor(scores, dtype=torch.float64)
    std = spread.std().item() if draws > 1 else 0.0
    return FewShotResult(shots=shots, mean=spread.mean().item(), std=std)


@contextmanager
def _one_thread() -> Iterator[None]:
    """One intra-op thread inside the block: a probe on a few dozen samples is latency-bound, and
    on a busy machine the threads of such tiny L-BFGS steps mostly wait on each other (10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def too_few_for_shots(train_labels: Tensor, test_labels: Tensor, shots: int) -> tuple[int, int] | None:
    """``(class, count)`` of the class with the fewest probe-train samples when it has under ``shots``.

    Classes are those seen on either side of the split (a class only in the test side has 0).
    """
    classes = torch.unique(torch.cat([train_labels, test_labels]))
    counts = torch.stack([(train_labels == cls).sum() for cls in classes])
    fewest = int(counts.argmin())
    if int(counts[fewest]) >= shots:
        return None
    return int(classes[fewest]), int(counts[fewest])
