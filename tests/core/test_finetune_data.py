"""The labeled data of a fine-tune (sslhub/finetune_data.py): draws, validation share, seeded batches."""

from __future__ import annotations

from itertools import islice

import torch
from torch.utils.data import Dataset, default_collate

from sslhub.finetune_data import LabeledSet, SeededBatches, balanced_class_weights, draw_shots, hold_out


class Numbered(Dataset):
    """Sample ``i`` is ``{"index": i, "label": labels[i]}``."""

    def __init__(self, labels: torch.Tensor):
        self.labels = labels

    def __len__(self) -> int:
        return self.labels.numel()

    def __getitem__(self, index: int):
        return {"index": torch.tensor(index), "label": self.labels[index]}


class Collate:
    def collate(self, samples):
        return default_collate(samples)


LABELS = torch.tensor([0] * 30 + [1] * 20 + [2] * 10)
SET = LabeledSet(Numbered(LABELS), torch.arange(60), LABELS)


def test_shots_draw_k_per_class_seeded_and_hold_out_a_share_of_each_class():
    drawn = draw_shots(SET, 5, seed=3)
    assert torch.bincount(drawn.labels).tolist() == [5, 5, 5]
    assert torch.equal(drawn.indices, draw_shots(SET, 5, seed=3).indices)
    assert not torch.equal(drawn.indices, draw_shots(SET, 5, seed=4).indices)
    train, validation = hold_out(SET, 0.2, seed=0)
    assert torch.bincount(validation.labels).tolist() == [6, 4, 2]
    assert sorted(train.indices.tolist() + validation.indices.tolist()) == list(range(60))
    assert (LABELS[validation.indices] == validation.labels).all()


def test_balanced_weights_are_inverse_class_frequencies():
    weights = balanced_class_weights(LABELS, num_classes=4)
    assert torch.allclose(weights, torch.tensor([60 / (4 * 30), 60 / (4 * 20), 60 / (4 * 10), 0.0]))


def test_the_processes_share_each_batch_and_resume_at_a_position():
    whole = SeededBatches(SET, Collate(), batch_size=8, seed=1)
    ranks = [SeededBatches(SET, Collate(), batch_size=8, seed=1, shard=(rank, 2)) for rank in (0, 1)]
    assert whole.per_epoch == 7  # 60 // 8: the remainder is dropped
    batches = [batch["index"] for _, _, batch in islice(whole.from_position(0, 0), 10)]  # into epoch 2
    shares = [[batch["index"] for _, _, batch in islice(r.from_position(0, 0), 10)] for r in ranks]
    for batch, first, second in zip(batches, *shares, strict=True):
        assert first.numel() == second.numel() == 4
        assert sorted(torch.cat([first, second]).tolist()) == sorted(batch.tolist())
    assert len(set(torch.cat(batches[:7]).tolist())) == 56  # no sample twice in an epoch
    position, index, resumed = next(whole.from_position(1, 2))
    assert (position, index) == (1, 2) and torch.equal(resumed["index"], batches[7 + 2])
