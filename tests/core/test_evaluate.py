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


def test_few_shot_probe_on_separable_clusters_is_nearly_perfect():
    from sslhub.evaluate import few_shot_accuracy

    train_x, train_y = separable(300, 0, 0.3)
    test_x, test_y = separable(200, 1, 0.3)
    result = few_shot_accuracy(train_x, train_y, test_x, test_y, shots=5, draws=3, seed=0, epochs=50)
    assert result.shots == 5
    assert result.mean > 0.95
    assert 0.0 <= result.std < 0.05


def test_few_shot_probe_on_random_labels_is_at_chance():
    from sslhub.evaluate import few_shot_accuracy

    train_x, _ = separable(600, 0, 0.3)
    test_x, _ = separable(600, 1, 0.3)
    generator = torch.Generator().manual_seed(3)
    train_y = torch.randint(0, 3, (600,), generator=generator)
    test_y = torch.randint(0, 3, (600,), generator=generator)
    result = few_shot_accuracy(train_x, train_y, test_x, test_y, shots=5, draws=5, seed=0, epochs=50)
    assert abs(result.mean - 1 / 3) < 0.08


def test_few_shot_draws_are_deterministic_in_the_seed_and_differ_between_seeds():
    from sslhub.evaluate import few_shot_accuracy, few_shot_draw

    labels = torch.arange(60) % 3
    classes = torch.tensor([0, 1, 2])
    first = few_shot_draw(labels, classes, shots=4, seed=7)
    assert torch.equal(first, few_shot_draw(labels, classes, shots=4, seed=7))
    assert not torch.equal(first, few_shot_draw(labels, classes, shots=4, seed=8))
    assert first.numel() == 12 and torch.equal(labels[first], torch.tensor([0] * 4 + [1] * 4 + [2] * 4))
    assert first.unique().numel() == 12  # without replacement
    train_x, train_y = separable(300, 0, 2.0)  # overlapping: draws give different accuracies
    test_x, test_y = separable(200, 1, 2.0)
    once = few_shot_accuracy(train_x, train_y, test_x, test_y, shots=1, draws=4, seed=5, epochs=20)
    again = few_shot_accuracy(train_x, train_y, test_x, test_y, shots=1, draws=4, seed=5, epochs=20)
    assert once == again and once.std > 0


def test_too_few_for_shots_names_the_smallest_class_including_classes_only_in_the_test_side():
    from sslhub.evaluate import too_few_for_shots

    train = torch.tensor([0] * 10 + [1] * 3)
    assert too_few_for_shots(train, torch.tensor([0, 1]), 3) is None
    assert too_few_for_shots(train, torch.tensor([0, 1]), 5) == (1, 3)
    assert too_few_for_shots(train, torch.tensor([0, 2]), 1) == (2, 0)
