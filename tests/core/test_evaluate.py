"""kNN and linear-probe evaluation on synthetic embeddings with known answers."""

import pytest
import torch

from sslhub.evaluate import knn_accuracy, linear_probe_accuracy


def separable(n: int, seed: int, noise: float):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=generator)
    centres = torch.eye(3, 8) * 5
    return centres[labels] + noise * torch.randn(n, 8, generator=generator), labels


def test_separable_clusters_are_classified_perfectly():
    train_x, train_y = separable(300, 0, 0.3)
    test_x, test_y = separable(100, 1, 0.3)
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=5) == 1.0
    assert linear_probe_accuracy(train_x, train_y, test_x, test_y, epochs=50) == 1.0


def test_random_labels_give_chance_accuracy():
    train_x, _ = separable(600, 0, 0.3)
    test_x, _ = separable(300, 1, 0.3)
    generator = torch.Generator().manual_seed(2)
    train_y = torch.randint(0, 3, (600,), generator=generator)
    test_y = torch.randint(0, 3, (300,), generator=generator)
    assert abs(knn_accuracy(train_x, train_y, test_x, test_y, k=20) - 1 / 3) < 0.1
    assert abs(linear_probe_accuracy(train_x, train_y, test_x, test_y) - 1 / 3) < 0.1


def test_knn_uses_cosine_similarity():
    # Same direction, very different norms: cosine kNN must still match them.
    train_x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    train_y = torch.tensor([0, 1])
    test_x = torch.tensor([[100.0, 1.0], [0.1, 5.0]])
    assert knn_accuracy(train_x, train_y, test_x, torch.tensor([0, 1]), k=1) == 1.0


def test_weight_decay_candidates_are_chosen_without_the_test_set():
    from sslhub.evaluate import select_weight_decay

    generator = torch.Generator().manual_seed(0)
    # 20 samples in 200 dimensions, one informative: an unregularised probe memorises noise
    labels = torch.arange(40) % 2
    features = torch.randn(40, 200, generator=generator)
    features[:, 0] += 3.0 * (labels * 2 - 1)
    train_x, train_y, test_x, test_y = features[:20], labels[:20], features[20:], labels[20:]
    chosen = select_weight_decay(train_x, train_y, [0.0, 10.0], epochs=50)
    assert chosen == 10.0
    assert select_weight_decay(train_x, train_y, [0.5], epochs=5) == 0.5
    with pytest.raises(ValueError, match="must not be empty"):
        select_weight_decay(train_x, train_y, [])
    tuned = linear_probe_accuracy(train_x, train_y, test_x, test_y, epochs=50, weight_decay=[0.0, 10.0])
    assert tuned == linear_probe_accuracy(train_x, train_y, test_x, test_y, epochs=50, weight_decay=10.0)
