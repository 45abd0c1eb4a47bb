"""The mlm objective: masking statistics, special tokens, whole words, tied head, training, report."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch.utils.data import DataLoader

from sslhub import BuildContext, Encoder
from sslhub_text.objectives.mlm import (
    MASKED_SAMPLES_FILE,
    MLMObjective,
    MLMParams,
    mask_tokens,
    unigram_counts,
    word_start_positions,
)


def make_objective(text_modality, encoder, **params) -> MLMObjective:
    context = BuildContext(modality=text_modality, modality_name="text", encoder=encoder)
    return MLMObjective(MLMParams(**params), context)


def test_masking_statistics_match_bert(text_modality):
    torch.manual_seed(0)
    info = text_modality.info()
    ids = torch.randint(5, info.vocab_size, (512, 128))
    eligible = torch.ones_like(ids, dtype=torch.bool)
    replacement_ids = torch.arange(5, info.vocab_size)
    corrupted, selected = mask_tokens(ids, eligible, mask_token_id=info.mask_token_id, replacement_ids=replacement_ids)
    n = selected.sum().item()
    assert abs(n / ids.numel() - 0.15) < 0.005
    masked = (corrupted == info.mask_token_id) & selected
    unchanged = (corrupted == ids) & selected
    random = selected & ~masked & ~unchanged
    assert abs(masked.sum().item() / n - 0.8) < 0.01
    # a random draw equal to the original counts as unchanged: ~1/V of the random ones
    assert abs(random.sum().item() / n - 0.1) < 0.01
    assert abs(unchanged.sum().item() / n - 0.1) < 0.01
    assert torch.equal(corrupted[~selected], ids[~selected])
    assert not torch.isin(corrupted[random], torch.arange(5)).any()


def test_special_tokens_and_padding_are_never_selected(text_modality, make_encoder):
    objective = make_objective(text_modality, make_encoder(), mask_probability=0.9)
    split = text_modality.eval_split()
    batch = text_modality.collate([split.train[i] for i in range(64)])
    batch.pop("label")
    assert (batch["attention_mask"] == 0).any()
    special = torch.tensor(text_modality.info().special_token_ids)
    for _ in range(5):
        corrupted, selected = objective.corrupt(batch)
        assert not selected[batch["attention_mask"] == 0].any()
        assert not selected[torch.isin(batch["input_ids"], special)].any()
        # padding and [CLS]/[SEP] are left exactly as they were
        untouched = ~batch["attention_mask"].bool() | torch.isin(batch["input_ids"], special)
        assert torch.equal(corrupted["input_ids"][untouched], batch["input_ids"][untouched])
    assert selected.float().sum() / objective.eligible(batch).sum() > 0.8


def test_word_start_positions_by_hand():
    is_continuation = torch.zeros(20, dtype=torch.bool)
    is_continuation[[11, 12]] = True  # "##" pieces
    ids = torch.tensor([[2, 5, 11, 12, 6, 11, 3, 0]])
    eligible = torch.tensor([[False, True, True, True, True, True, False, False]])
    assert word_start_positions(ids, eligible, is_continuation).tolist() == [[0, 1, 1, 1, 4, 4, 4, 4]]


def test_whole_word_masking_selects_all_pieces_of_a_word(text_modality, make_encoder):
    torch.manual_seed(1)
    objective = make_objective(text_modality, make_encoder(), whole_word_masking=True, mask_probability=0.3)
    batch = text_modality.collate([text_modality.train_dataset()[i] for i in range(64)])
    _, selected = objective.corrupt(batch)
    eligible = objective.eligible(batch)
    starts = word_start_positions(batch["input_ids"], eligible, objective.is_continuation)
    continuation = eligible & objective.is_continuation[batch["input_ids"]] & (starts > 0)
    assert continuation.sum() > 50
    # every continuation piece shares its word start's fate
    assert torch.equal(selected[continuation], selected.gather(1, starts)[continuation])
    assert 0.2 < selected.sum().item() / eligible.sum().item() < 0.4


def test_decoder_is_tied_to_the_input_embeddings(text_modality, make_encoder):
    encoder = make_encoder()
    objective = make_objective(text_modality, encoder)
    embedding = encoder.get_input_embeddings().weight
    assert objective.head.decoder_weight is embedding
    assert objective.head.decoder_weight.data_ptr() == embedding.data_ptr()
    # not a second copy among the objective's parameters or state
    assert all(p is not embedding for p in objective.parameters())
    assert not any(v.data_ptr() == embedding.data_ptr() for v in objective.state_dict().values())
    batch = text_modality.collate([text_modality.train_dataset()[i] for i in range(8)])
    objective([batch], encoder).loss.backward()
    assert embedding.grad is not None and embedding.grad.abs().sum() > 0


def test_lm_head_matches_a_hand_computation(text_modality, make_encoder):
    encoder = make_encoder()
    head = make_objective(text_modality, encoder).head
    hidden = torch.randn(4, 32)
    x = head.dense(hidden)
    x = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-12)
    x = x * head.layer_norm.weight + head.layer_norm.bias
    expected = x @ encoder.get_input_embeddings().weight.T + head.bias
    torch.testing.assert_close(head(hidden), expected, atol=1e-5, rtol=1e-5)


def test_loss_is_cross_entropy_on_selected_positions_only(text_modality, make_encoder):
    encoder = make_encoder(dropout=0.0)
    objective = make_objective(text_modality, encoder)
    batch = text_modality.collate([text_modality.train_dataset()[i] for i in range(8)])
    generator = torch.Generator().manual_seed(3)
    loss, _, targets = objective._loss(batch, encoder, generator)
    corrupted, selected = objective.corrupt(batch, torch.Generator().manual_seed(3))
    logits = objective.head(encoder(corrupted).tokens)
    expected = F.cross_entropy(logits[selected], batch["input_ids"][selected])
    torch.testing.assert_close(loss, expected)
    assert targets.numel() == selected.sum()


def test_loss_falls_and_held_out_accuracy_beats_the_unigram_baseline(text_modality, make_encoder):
    torch.manual_seed(0)
    encoder = make_encoder(hidden_size=64, num_heads=2, intermediate_size=128, dropout=0.0)
    objective = make_objective(text_modality, encoder, mask_probability=0.2)
    optimizer = torch.optim.Adam([*encoder.parameters(), *objective.parameters()], lr=3e-3)
    loader = DataLoader(text_modality.train_dataset(), batch_size=32, shuffle=True, collate_fn=text_modality.collate)
    losses = []
    batches = iter(loader)
    for _ in range(40):
        output = objective([next(batches)], encoder)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    # ~6.7 -> ~5.6 nats in 40 steps; 0.75 leaves room for thread-count numerics
    assert last < first - 0.75, losses
    report = objective.report(None, encoder, text_modality)
    held_out, unigram = report["held_out"], report["unigram_baseline"]
    assert held_out["perplexity"] < report["uniform_baseline"]["perplexity"] / 4
    assert unigram["perplexity"] < report["uniform_baseline"]["perplexity"]
    assert held_out["masked_tokens"] > 500
    assert 0.0 < unigram["accuracy"] < 0.3


def test_held_out_metrics_are_reproducible(text_modality, make_encoder):
    encoder = make_encoder().eval()
    objective = make_objective(text_modality, encoder)
    batch = text_modality.collate([text_modality.held_out_dataset()[i] for i in range(16)])
    first = objective.held_out_metrics(batch, encoder)
    torch.rand(10)  # global RNG use in between must not matter
    assert objective.held_out_metrics(batch, encoder) == first
    assert set(first) == {"mlm_accuracy", "mlm_loss"}
    # random init: loss near log(V)
    assert abs(first["mlm_loss"] - math.log(text_modality.info().vocab_size)) < 1.5


def test_unigram_counts_by_hand():
    dataset = [
        {"input_ids": torch.tensor([2, 7, 7, 8, 3]), "attention_mask": torch.ones(5, dtype=torch.int64)},
        {"input_ids": torch.tensor([2, 8, 0]), "attention_mask": torch.tensor([1, 1, 0])},
    ]
    is_special = torch.zeros(10, dtype=torch.bool)
    is_special[:5] = True
    counts = unigram_counts(dataset, 10, is_special)
    assert counts.tolist() == [0, 0, 0, 0, 0, 1, 1, 3, 3, 1]


def test_bad_params_and_encoders_are_refused(text_modality):
    with pytest.raises(ValidationError, match="mask_token_ratio \\+ random_token_ratio must be <= 1"):
        MLMParams(mask_token_ratio=0.9, random_token_ratio=0.2)
    with pytest.raises(ValidationError, match="less than 1"):
        MLMParams(mask_probability=1.0)

    class NoEmbeddings(Encoder):
        feature_dim = 8
        provides = frozenset({"pooled", "tokens"})

    with pytest.raises(ValueError, match="does not declare provides 'token_embeddings'"):
        make_objective(text_modality, NoEmbeddings())


def test_report_uses_at_most_report_max_samples_held_out_samples(text_modality, make_encoder):
    encoder = make_encoder().eval()
    full = make_objective(text_modality, encoder).evaluate(encoder, text_modality)
    capped = make_objective(text_modality, encoder, report_max_samples=8).evaluate(encoder, text_modality)
    per_sample = full["masked_tokens"] / len(text_modality.held_out_dataset())
    assert len(text_modality.held_out_dataset()) > 8
    assert 0 < capped["masked_tokens"] < 8 * per_sample * 3
    assert capped["masked_tokens"] < full["masked_tokens"]


def test_report_writes_masked_text_examples_as_the_model_saw_them(text_modality, make_encoder, tmp_path):
    encoder = make_encoder().eval()
    objective = make_objective(text_modality, encoder, mask_probability=0.3)
    objective.report(tmp_path, encoder, text_modality)
    lines = (tmp_path / MASKED_SAMPLES_FILE).read_text().splitlines()
    assert len(lines) == 4 * 4  # four samples: a heading, the masked input, the original, the guess
    held_out = text_modality.held_out_dataset()
    batch = text_modality.collate([held_out[index] for index in range(4)])
    corrupted, selected = objective.corrupt(batch, objective._held_out_generator(batch))
    mask_id = text_modality.info().mask_token_id
    for row in range(4):
        heading, model_input, original, guess = lines[4 * row : 4 * row + 4]
        selected_count = int(selected[row].sum())
        assert heading.startswith(f"sample {row + 1} ({selected_count} tokens selected, ")
        right = int(re.search(r"(\d+) guessed right", heading).group(1))
        assert 0 <= right <= selected_count
        assert original == "  original:    " + text_modality.decode_sample(batch, row)
        assert model_input == "  model input: " + text_modality.decode_sample(corrupted, row)
        assert model_input.count("[MASK]") == int((corrupted["input_ids"][row] == mask_id).sum()) > 0
        assert guess.startswith("  model guess: ") and "[MASK]" not in guess


def test_no_masked_examples_without_a_decoding_modality(text_modality, make_encoder):
    encoder = make_encoder().eval()
    objective = make_objective(text_modality, encoder)

    from sslhub import Modality

    class NoDecode(Modality):  # a token modality that cannot turn ids back into text (decode_sample: None)
        def train_dataset(self):
            return text_modality.train_dataset()

        def held_out_dataset(self):
            return text_modality.held_out_dataset()

        def collate(self, samples):
            return text_modality.collate(samples)

        def example_batch(self, batch_size, device="cpu"):
            return text_modality.example_batch(batch_size, device)

    assert objective.masked_examples(encoder, NoDecode()) is None


def test_validation_refuses_an_encoder_without_token_embeddings_for_mlm():
    """A declared capability, checked before anything is built (it used to be a hasattr at build time)."""
    from sslhub import Catalog
    from sslhub.errors import RecipeError
    from sslhub.recipe import resolve_recipe
    from sslhub.recipe_yaml import load_recipe_text

    catalog = Catalog.load(["sslhub_text.plugin"], entry_points=False, python_registrations=False, strict=True)
    catalog.encoders.register("tokens_only", lambda params, context: None, modalities=["text"], provides=["tokens"])
    text = "name: x\ndata: {modality: text}\nencoder: {name: tokens_only}\nobjectives: [{name: mlm}]\n"
    with pytest.raises(RecipeError) as error:
        resolve_recipe(load_recipe_text(text, "bad.yaml"), catalog)
    message = str(error.value)
    assert "bad.yaml:4" in message and "objective 'mlm' needs an encoder with a token embedding table" in message
    assert "encoder 'tokens_only' does not declare provides=['token_embeddings']" in message
