"""The ``scarf`` objective: feature corruption, its InfoNCE loss, and that it learns on a tiny table."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sslhub import BuildContext, ModalityInfo
from sslhub_autoencoder.corruption import swap_columns
from sslhub_autoencoder.encoders import MLPEncoder, MLPParams
from sslhub_autoencoder.objectives.scarf import ScarfObjective, ScarfParams, info_nce, nearest_other_rows


class _Info:
    def __init__(self, dim: int):
        self.dim = dim

    def info(self) -> ModalityInfo:
        return ModalityInfo(dim=self.dim)


def test_corruption_takes_each_replaced_value_from_the_same_column_of_the_batch():
    torch.manual_seed(0)
    rows = torch.arange(64 * 8, dtype=torch.float32).reshape(64, 8)
    corrupted = swap_columns(rows, 0.6)
    assert corrupted.shape == rows.shape
    for column in range(8):
        assert set(corrupted[:, column].tolist()) <= set(rows[:, column].tolist())
    changed = (corrupted != rows).float().mean().item()
    # 0.6 replaced, less the draws that hit the row itself (1/64)
    assert 0.5 < changed < 0.7


def test_info_nce_is_low_for_matching_pairs_and_high_for_shuffled_ones():
    torch.manual_seed(0)
    anchors = torch.randn(32, 16)
    low, accuracy = info_nce(anchors, anchors + 0.01 * torch.randn(32, 16), temperature=0.1)
    high, _ = info_nce(anchors, anchors[torch.randperm(32)], temperature=0.1)
    assert accuracy.item() == 1.0 and low.item() < 0.1 < high.item()


def test_nearest_other_rows_picks_the_closest_row_but_never_the_row_itself():
    rows = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0], [5.0, 5.5], [5.0, 5.0]])
    # rows 2 and 4 are equal: each is the other's nearest (distance 0), never itself
    expected = torch.tensor([[1.0, 0.0], [0.0, 0.0], [5.0, 5.0], [5.0, 5.0], [5.0, 5.0]])
    assert torch.equal(nearest_other_rows(rows), expected)


def test_a_row_cannot_be_its_own_uncorrupted_positive():
    with pytest.raises(ValueError, match="corruption_rate 0 with positive: self"):
        ScarfParams(corruption_rate=0)
    assert ScarfParams(corruption_rate=0, positive="neighbour").corruption_rate == 0


def test_scarf_needs_rows_and_an_encoder():
    with pytest.raises(ValueError, match="needs the built encoder"):
        ScarfObjective(ScarfParams(), BuildContext())


def _table(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """4 classes living in 12 correlated columns, drowned among 48 independent noise columns."""
    labels = torch.randint(4, (n,), generator=generator)
    centers = torch.randn(4, 3, generator=generator) * 2.0
    mixing = torch.randn(3, 12, generator=generator)
    signal = (centers[labels] + 0.3 * torch.randn(n, 3, generator=generator)) @ mixing
    noise = torch.randn(n, 48, generator=generator)
    rows = torch.cat([signal, noise], dim=1)
    return (rows - rows.mean(0)) / rows.std(0), labels


def _nearest_centroid_accuracy(features: torch.Tensor, labels: torch.Tensor) -> float:
    features = F.normalize(features - features.mean(0), dim=1)
    train, test = slice(0, 200), slice(200, None)
    centroids = torch.stack([features[train][labels[train] == c].mean(0) for c in range(4)])
    return (F.normalize(centroids, dim=1) @ features[test].T).argmax(0).eq(labels[test]).float().mean().item()


@pytest.mark.parametrize(
    "params",
    [
        {"temperature": 0.5, "projection_dim": 16},
        {"temperature": 0.5, "projection_dim": 16, "positive": "neighbour", "corruption_rate": 0.0},
    ],
    ids=["self", "neighbour"],
)
def test_scarf_loss_falls_and_the_encoder_beats_its_random_init(params: dict):
    generator = torch.Generator().manual_seed(0)
    rows, labels = _table(400, generator)
    torch.manual_seed(0)
    context = BuildContext(modality=_Info(60))
    encoder = MLPEncoder(MLPParams(hidden_sizes=[64], output_dim=16), context)
    with torch.no_grad():
        before = _nearest_centroid_accuracy(encoder({"vector": rows}).pooled, labels)
    objective = ScarfObjective(ScarfParams(**params), BuildContext(encoder=encoder))
    optimizer = torch.optim.Adam([*encoder.parameters(), *objective.parameters()], lr=3e-3)
    losses = []
    for _ in range(300):
        batch = rows[torch.randint(400, (128,), generator=generator)]
        loss = objective([{"vector": batch}], encoder).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        after = _nearest_centroid_accuracy(encoder({"vector": rows}).pooled, labels)
    # positives differ from their anchors (swapped columns or another row), so the loss stays well
    # above 0; it must still clearly fall
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20 - 0.3
    assert after > before + 0.1, (before, after)
