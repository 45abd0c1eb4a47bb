"""The split_contrastive objective: disjoint word halves, whole words, one-word texts, training."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from sslhub import BuildContext
from sslhub_text.encoders.causal_hf import CausalHFEncoder, CausalHFParams
from sslhub_text.objectives.split_contrastive import (
    SplitContrastiveObjective,
    SplitContrastiveParams,
    split_halves,
    trim_padding_columns,
)


def make_objective(text_modality, encoder, **params) -> SplitContrastiveObjective:
    context = BuildContext(modality=text_modality, modality_name="text", encoder=encoder)
    return SplitContrastiveObjective(SplitContrastiveParams(**params), context)


def content_tokens(batch, objective) -> list[list[int]]:
    """Each row's content token ids in order (no special tokens, no padding)."""
    rows = []
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
        rows.append([int(t) for t, m in zip(ids, mask, strict=True) if m and not objective.is_special[t]])
    return rows


def test_halves_share_no_token_position_and_together_make_the_text(text_modality, make_encoder):
    objective = make_objective(text_modality, make_encoder())
    batch = text_modality.collate([text_modality.train_dataset()[i] for i in range(16)])
    torch.manual_seed(0)
    first, second = objective.halves(batch)
    assert first["input_ids"].shape == second["input_ids"].shape == batch["input_ids"].shape
    whole = content_tokens(batch, objective)
    split = 0
    for text, a, b in zip(whole, content_tokens(first, objective), content_tokens(second, objective), strict=True):
        assert a and b  # neither half is empty
        if a == text and b == text:
            continue  # a text whose deal left one half empty is kept whole in both
        split += 1
        assert sorted(a + b) == sorted(text)  # a partition of the text's tokens
        assert len(a) < len(text) and len(b) < len(text)
    assert split >= 12  # the pydoc paragraphs have many words: nearly all are split


def test_word_pieces_follow_their_word():
    # positions 1-3 are one word (a start and two continuation pieces), 4 is another word
    eligible = torch.tensor([[False, True, True, True, True, False]]).repeat(64, 1)
    word_starts = torch.tensor([[0, 1, 1, 1, 4, 4]]).repeat(64, 1)
    torch.manual_seed(0)
    delete_first, delete_second = split_halves(eligible, word_starts)
    split = delete_first.any(dim=1)
    assert 10 < int(split.sum()) < 54  # about half the deals put both words in one half
    # a split row: every content token in exactly one half, a word's pieces together
    assert torch.equal(delete_first[split] ^ delete_second[split], eligible[split])
    for row in delete_first[split]:
        assert row[1] == row[2] == row[3] != row[4]
    # a row whose deal left a half empty is kept whole in both halves
    assert not delete_first[~split].any() and not delete_second[~split].any()


def test_a_one_word_text_is_kept_whole_in_both_halves():
    eligible = torch.tensor([[False, True, True, False]])
    word_starts = torch.tensor([[0, 1, 1, 1]])  # one word of two pieces
    for seed in range(8):
        torch.manual_seed(seed)
        delete_first, delete_second = split_halves(eligible, word_starts)
        assert not delete_first.any() and not delete_second.any()


def test_loss_is_infonce_over_the_batch_and_falls(text_modality, make_encoder):
    encoder = make_encoder(dropout=0.0)
    objective = make_objective(text_modality, encoder, temperature=0.1)
    batch = text_modality.collate([text_modality.train_dataset()[i] for i in range(32)])
    torch.manual_seed(0)
    first = objective([batch], encoder)
    assert 0.0 < first.loss.item() < 2 * math.log(32) + 10
    optimizer = torch.optim.Adam([*encoder.parameters(), *objective.parameters()], lr=3e-3)
    losses = []
    for _ in range(30):
        output = objective([batch], encoder)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    assert float(output.metrics["contrastive_accuracy"]) > 0.5


def test_trimming_drops_only_all_padding_columns():
    batch = {
        "input_ids": torch.tensor([[5, 6, 7, 0, 0], [5, 6, 0, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]),
    }
    trimmed = trim_padding_columns(batch)
    assert trimmed["input_ids"].tolist() == [[5, 6, 7], [5, 6, 0]]
    assert trimmed["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    full = {key: value[:, :3] for key, value in batch.items()}
    assert trim_padding_columns(full)["input_ids"].shape == (2, 3)


@pytest.mark.parametrize("causal", [False, True])
def test_trimmed_halves_pool_as_the_untrimmed_ones(text_modality, make_encoder, causal):
    if causal:
        torch.manual_seed(0)
        params = CausalHFParams(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, architecture="llama")
        encoder = CausalHFEncoder(params, BuildContext(modality=text_modality, modality_name="text"))
    else:
        encoder = make_encoder()
    objective = make_objective(text_modality, encoder)
    batch = text_modality.collate([text_modality.train_dataset()[i] for i in range(8)])
    torch.manual_seed(0)
    first, _ = objective.halves(batch)
    trimmed = trim_padding_columns(first)
    assert trimmed["input_ids"].shape[1] < first["input_ids"].shape[1]  # a half is shorter than its text
    with torch.no_grad():
        torch.testing.assert_close(encoder.eval()(trimmed).pooled, encoder(first).pooled, atol=1e-5, rtol=1e-5)


def test_bad_arguments(text_modality, make_encoder):
    with pytest.raises(ValidationError):
        SplitContrastiveParams(temperature=0.0)
    with pytest.raises(ValueError, match="encoder"):
        SplitContrastiveObjective(SplitContrastiveParams(), BuildContext(modality=text_modality, modality_name="text"))
    objective = make_objective(text_modality, make_encoder(), projection_dim=16)
    assert sum(p.numel() for p in objective.parameters()) == 32 * 32 + 32 + 32 * 16 + 16


def test_whole_words_needs_a_modality_that_knows_word_continuations():
    # checked by recipe validation against the modality's provides=, before anything is built
    assert SplitContrastiveParams(whole_words=True).modality_needs() == {"word_continuations"}
    assert SplitContrastiveParams(whole_words=False).modality_needs() == frozenset()
