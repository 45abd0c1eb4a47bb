"""Token augmentations: deletion with left shift, span deletion, random replacement; specials untouched."""

from __future__ import annotations

import pytest
import torch

from sslhub import BuildContext
from sslhub_text.augmentations.tokens import (
    RandomTokenReplacement,
    RandomTokenReplacementParams,
    SpanDeletion,
    SpanDeletionParams,
    TokenDropout,
    TokenDropoutParams,
    delete_tokens,
)

CLS, SEP, PAD = 2, 3, 0


@pytest.fixture
def context(text_modality):
    return BuildContext(modality=text_modality, modality_name="text")


@pytest.fixture
def batch(text_modality):
    split = text_modality.eval_split()
    collated = text_modality.collate([split.train[i] for i in range(64)])
    collated.pop("label")
    return collated


def content(batch, row, specials=(0, 1, 2, 3, 4)):
    ids = batch["input_ids"][row][batch["attention_mask"][row].bool()]
    return ids, ids[~torch.isin(ids, torch.tensor(specials))]


def test_delete_tokens_shifts_left_and_pads_by_hand():
    batch = {
        "input_ids": torch.tensor([[CLS, 10, 11, 12, SEP, PAD], [CLS, 20, 21, SEP, PAD, PAD]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]]),
        "label": torch.tensor([4, 5]),
    }
    delete = torch.tensor([[False, True, False, True, False, False], [False, False, False, False, False, False]])
    out = delete_tokens(batch, delete, PAD)
    assert out["input_ids"].tolist() == [[CLS, 11, SEP, PAD, PAD, PAD], [CLS, 20, 21, SEP, PAD, PAD]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]]
    assert out["label"] is batch["label"]
    assert batch["input_ids"][0, 1] == 10  # input not modified


def test_token_dropout_deletes_only_content_tokens_in_order(context, batch):
    torch.manual_seed(0)
    out = TokenDropout(TokenDropoutParams(p=0.3), context)(batch)
    assert out["input_ids"].shape == batch["input_ids"].shape
    before_total, after_total = 0, 0
    for row in range(batch["input_ids"].shape[0]):
        ids_before, kept_before = content(batch, row)
        ids_after, kept_after = content(out, row)
        # special tokens all survive, in the same order
        specials = torch.tensor([0, 1, 2, 3, 4])
        assert torch.equal(ids_before[torch.isin(ids_before, specials)], ids_after[torch.isin(ids_after, specials)])
        # what is left is a subsequence of the original content
        it = iter(kept_before.tolist())
        assert all(token in it for token in kept_after.tolist())
        # padding only at the end, mask consistent
        n = int(out["attention_mask"][row].sum())
        assert out["attention_mask"][row, :n].all() and (out["input_ids"][row, n:] == PAD).all()
        before_total += len(kept_before)
        after_total += len(kept_after)
    assert abs(1 - after_total / before_total - 0.3) < 0.05


def test_span_deletion_removes_one_contiguous_span(context, batch):
    torch.manual_seed(0)
    out = SpanDeletion(SpanDeletionParams(p=1.0, max_span=4), context)(batch)
    lengths = []
    for row in range(batch["input_ids"].shape[0]):
        _, before = content(batch, row)
        _, after = content(out, row)
        removed = len(before) - len(after)
        if len(before) > 1:
            assert 1 <= removed <= 4 and len(after) >= 1
            # the remainder is the original with one window cut out
            start = next((i for i in range(len(after)) if after[i] != before[i]), len(after))
            assert torch.equal(after[start:], before[start + removed :])
        lengths.append(removed)
    assert set(lengths) >= {1, 2, 3, 4}


def test_span_deletion_with_p_zero_is_identity(context, batch):
    out = SpanDeletion(SpanDeletionParams(p=0.0), context)(batch)
    assert torch.equal(out["input_ids"], batch["input_ids"])
    assert torch.equal(out["attention_mask"], batch["attention_mask"])


def test_random_token_replacement_never_touches_specials_or_padding(context, batch, text_modality):
    torch.manual_seed(0)
    out = RandomTokenReplacement(RandomTokenReplacementParams(p=1.0), context)(batch)
    specials = torch.tensor(text_modality.info().special_token_ids)
    protected = torch.isin(batch["input_ids"], specials) | (batch["attention_mask"] == 0)
    assert torch.equal(out["input_ids"][protected], batch["input_ids"][protected])
    assert torch.equal(out["attention_mask"], batch["attention_mask"])
    replaced = out["input_ids"][~protected]
    assert not torch.isin(replaced, specials).any()
    assert (replaced != batch["input_ids"][~protected]).float().mean() > 0.95
    half = RandomTokenReplacement(RandomTokenReplacementParams(p=0.5), context)(batch)
    assert 0.4 < (half["input_ids"] != batch["input_ids"]).sum() / (~protected).sum() < 0.6
