"""Fixtures shared by the plugin tests of more than one plugin."""

from __future__ import annotations

import pytest
import torch

from sslhub import Encoder, Modality, Objective
from sslhub.evaluate import embed_dataset, few_shot_draw, knn_accuracy


def _train_on_images(encoder: Encoder, objective: Objective, modality: Modality, steps: int, **adam) -> list[float]:
    training = modality.train_dataset()
    images = modality.on_device(modality.collate([training[i] for i in range(len(training))]))
    order = torch.randperm(len(training))
    trainable = [p for p in [*encoder.parameters(), *objective.parameters()] if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, **{"lr": 3e-3, **adam})
    encoder.train()
    objective.train()
    losses = []
    for step in range(steps):
        chosen = order[(step * 64 + torch.arange(64)) % len(order)]
        output = objective([{key: value[chosen] for key, value in images.items()}], encoder)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    return losses


def _eval_features(encoder: Encoder, modality: Modality) -> tuple[torch.Tensor, ...]:
    """Pooled features and labels of the labeled split: ``(train, train_labels, test, test_labels)``."""
    split = modality.eval_split()
    cpu = torch.device("cpu")
    return (*embed_dataset(encoder, modality, split.train, cpu), *embed_dataset(encoder, modality, split.test, cpu))


def _held_out_knn(encoder: Encoder, modality: Modality, k: int = 5) -> float:
    train, train_labels, test, test_labels = _eval_features(encoder, modality)
    return knn_accuracy(train, train_labels, test, test_labels, k=k)


def _few_label_knn(encoder: Encoder, modality: Modality, labels_per_class: int = 5, draws: int = 5) -> float:
    train, train_labels, test, test_labels = _eval_features(encoder, modality)
    classes = torch.unique(train_labels)
    scores = []
    for draw in range(draws):
        labeled = few_shot_draw(train_labels, classes, labels_per_class, seed=draw)
        scores.append(knn_accuracy(train[labeled], train_labels[labeled], test, test_labels, k=labels_per_class))
    return sum(scores) / draws


@pytest.fixture(scope="session")
def train_on_images():
    """``train_on_images(encoder, objective, modality, steps, **adam)``: Adam (lr 3e-3 unless
    given) on the encoder and objective, one batch of 64 training images a step, in a shuffled
    order over all of them (a fixed batch is memorised and the features suffer); the losses."""
    return _train_on_images


@pytest.fixture(scope="session")
def few_label_knn():
    """``few_label_knn(encoder, modality)``: kNN accuracy of the encoder's pooled features on the
    held-out images when only 5 training images per class are labeled (mean over 5 draws).

    Few labels, because with all of them the pooled pyramid of a *random* small CNN already
    scores about 0.9 on the embedded digits, level with a trained one; with 5 per class it
    scores 0.6-0.8 and what the encoder learned shows (as in the recipes' 5-shot read-outs).
    """
    return _few_label_knn


@pytest.fixture(scope="session")
def held_out_knn():
    """``held_out_knn(encoder, modality, k=5)``: kNN accuracy of the encoder's pooled features on
    the held-out part of the labeled split, every training sample labeled."""
    return _held_out_knn
