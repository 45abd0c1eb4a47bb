"""causal_lm and hf_causal: the loss by hand, causality, learning vs random init and unigram, validation."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch.utils.data import DataLoader

from sslhub import BuildContext
from sslhub.catalog import Catalog
from sslhub.errors import RecipeError
from sslhub.recipe import resolve_recipe
from sslhub.recipe_yaml import load_recipe_text
from sslhub_text.encoders.causal_hf import (
    CAUSAL_ARCHITECTURES,
    CausalHFEncoder,
    CausalHFParams,
    echo_sequences,
    last_token_states,
    position_weighted_mean,
)
from sslhub_text.objectives.causal_lm import (
    CausalLMObjective,
    CausalLMParams,
    causal_lm_loss,
    sample_positions,
    sampled_causal_lm_loss,
    target_counts,
)
from sslhub_text.token_store import TokenSequences


def make_causal(text_modality, objective_params=None, **overrides) -> tuple[CausalHFEncoder, CausalLMObjective]:
    torch.manual_seed(0)
    params = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "dropout": 0.0}
    context = BuildContext(modality=text_modality, modality_name="text")
    encoder = CausalHFEncoder(CausalHFParams(**{**params, **overrides}), context)
    context.encoder = encoder
    return encoder, CausalLMObjective(CausalLMParams(**(objective_params or {})), context)


def test_causal_lm_loss_by_hand():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [5.0, 5.0, 5.0]]])  # [1, 4, 3]
    input_ids = torch.tensor([[0, 1, 2, 1]])
    attention_mask = torch.tensor([[1, 1, 1, 0]])  # the last token is padding: not a target
    loss, accuracy, count = causal_lm_loss(logits, input_ids, attention_mask)
    # position 0 predicts id 1, position 1 predicts id 2
    expected = -(F.log_softmax(logits[0, 0], -1)[1] + F.log_softmax(logits[0, 1], -1)[2]) / 2
    torch.testing.assert_close(loss, expected)
    assert count.item() == 2
    assert accuracy.item() == 0.0  # argmaxes are 0 and 1
    # no padding: targets 0, 1, 0; the argmaxes 0, 1, 2 get the first two right
    loss, accuracy, count = causal_lm_loss(logits, torch.tensor([[0, 0, 1, 0]]), torch.ones(1, 4))
    assert count.item() == 3 and accuracy.item() == pytest.approx(2 / 3)
    log_probs = F.log_softmax(logits[0, :3], -1)
    torch.testing.assert_close(loss, -(log_probs[0, 0] + log_probs[1, 1] + log_probs[2, 0]) / 3)


def test_objective_loss_matches_a_direct_computation(text_modality):
    encoder, objective = make_causal(text_modality)
    batch = text_modality.collate([text_modality.held_out_dataset()[i] for i in range(6)])
    output = objective([batch], encoder.eval())
    hidden = encoder(batch).tokens
    logits = hidden @ encoder.get_input_embeddings().weight.T + objective.head.bias
    rows = []
    for b in range(batch["input_ids"].shape[0]):
        length = int(batch["attention_mask"][b].sum())
        rows.append(F.cross_entropy(logits[b, : length - 1], batch["input_ids"][b, 1:length], reduction="sum"))
    expected = torch.stack(rows).sum() / (batch["attention_mask"][:, 1:].sum())
    torch.testing.assert_close(output.loss, expected)
    # the head is tied: the embedding table is the encoder's, not a copy
    assert objective.head._embeddings.weight is encoder.get_input_embeddings().weight
    assert all(p is not encoder.get_input_embeddings().weight for p in objective.parameters())


def test_sampled_positions_take_real_targets_first():
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    target_weights = mask[:, 1:].float()  # position t has a real next token
    for _ in range(20):
        positions = sample_positions(target_weights, 3)
        assert positions.shape == (3, 3)
        assert all(len(set(row)) == 3 for row in positions.tolist())  # distinct
        assert all(0 <= p <= 4 for row in positions.tolist() for p in row)  # position 5 has no next token
        # row 1 has 2 real targets (positions 0 and 1): both are drawn, plus one padding position
        assert {0, 1} <= set(positions[1].tolist())
    drawn = torch.cat([sample_positions(target_weights, 2)[0] for _ in range(50)])
    assert set(drawn.tolist()) == {0, 1, 2, 3, 4}  # random, not always the same ones


def test_sampled_loss_over_every_position_equals_the_full_loss():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11)
    hidden, input_ids = torch.randn(3, 6, 8), torch.randint(0, 11, (3, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    full = causal_lm_loss(head(hidden), input_ids, mask)
    sampled = sampled_causal_lm_loss(hidden, head, input_ids, mask, 5)
    for a, b in zip(full, sampled, strict=True):
        torch.testing.assert_close(a, b)
    # 2 positions per row: row 0 scores 2 of its 5 targets, row 1 both, row 2 its only one (+ padding, weight 0)
    loss, _, count = sampled_causal_lm_loss(hidden, head, input_ids, mask, 2)
    assert count.item() == 5 and torch.isfinite(loss)


def test_rows_and_positions_fractions_train_on_a_share_and_report_on_all(text_modality):
    batch = text_modality.collate([text_modality.held_out_dataset()[i] for i in range(6)])
    encoder, full = make_causal(text_modality)
    _, on_half = make_causal(text_modality, {"rows_fraction": 0.5})
    on_half.head = full.head  # same weights: the two objectives differ only in their params
    encoder.eval()
    first_half = {key: value[:3] for key, value in batch.items()}
    torch.testing.assert_close(on_half([batch], encoder).loss, full([first_half], encoder).loss)
    assert on_half.held_out_metrics(batch, encoder) == full.held_out_metrics(batch, encoder)
    _, sampled = make_causal(text_modality, {"positions_fraction": 0.25})
    sampled.head = full.head
    torch.manual_seed(1)
    assert not torch.allclose(sampled([batch], encoder).loss, full([batch], encoder).loss)
    assert sampled.held_out_metrics(batch, encoder) == full.held_out_metrics(batch, encoder)


@pytest.mark.parametrize("key", ["rows_fraction", "positions_fraction"])
@pytest.mark.parametrize("value", [0.0, 1.5])
def test_fractions_outside_zero_one_are_refused(key, value):
    with pytest.raises(ValidationError, match=key):
        CausalLMParams(**{key: value})


@pytest.mark.parametrize("architecture", CAUSAL_ARCHITECTURES)
def test_hf_causal_positions_do_not_see_later_tokens(text_modality, architecture):
    encoder, _ = make_causal(text_modality, architecture=architecture)
    batch = text_modality.example_batch(2)
    changed = {**batch, "input_ids": batch["input_ids"].clone()}
    changed["input_ids"][:, 10:] = torch.flip(changed["input_ids"][:, 10:], dims=[0])
    with torch.no_grad():
        before, after = encoder.eval()(batch).tokens, encoder(changed).tokens
    torch.testing.assert_close(before[:, :10], after[:, :10], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(before[:, 10:], after[:, 10:], atol=1e-3)


def test_padding_does_not_change_the_real_positions(text_modality):
    encoder, _ = make_causal(text_modality, pooling="last")
    samples = [text_modality.held_out_dataset()[i] for i in range(4)]
    short = {"input_ids": samples[0]["input_ids"][None, :9], "attention_mask": torch.ones(1, 9, dtype=torch.int64)}
    padded = {
        "input_ids": torch.cat([short["input_ids"], torch.zeros(1, 7, dtype=torch.int64)], 1),
        "attention_mask": torch.cat([short["attention_mask"], torch.zeros(1, 7, dtype=torch.int64)], 1),
    }
    with torch.no_grad():
        alone, with_padding = encoder.eval()(short), encoder(padded)
    torch.testing.assert_close(alone.tokens, with_padding.tokens[:, :9], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone.pooled, with_padding.pooled, atol=1e-5, rtol=1e-5)


def test_last_token_pooling_picks_each_rows_last_real_position():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    assert last_token_states(hidden, mask).flatten().tolist() == [2.0, 7.0]


def test_weighted_mean_pooling_weighs_the_kth_content_token_k():
    hidden = torch.tensor([[[9.0], [1.0], [4.0], [7.0], [0.0]], [[9.0], [2.0], [5.0], [5.0], [5.0]]])  # [2, 5, 1]
    input_ids = torch.tensor([[101, 5, 6, 102, 0], [101, 7, 102, 0, 0]])  # [CLS] ... [SEP], then padding
    attention_mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    pooled = position_weighted_mean(hidden, input_ids, attention_mask, torch.tensor([101, 102]))
    # row 0: content 1.0 (weight 1) and 4.0 (weight 2); row 1: content 2.0 alone
    assert pooled.flatten().tolist() == pytest.approx([(1.0 + 2 * 4.0) / 3, 2.0])


def test_weighted_mean_pooling_ignores_padding(text_modality):
    encoder, _ = make_causal(text_modality, pooling="weighted_mean")
    sample = text_modality.held_out_dataset()[0]
    short = {"input_ids": sample["input_ids"][None, :9], "attention_mask": torch.ones(1, 9, dtype=torch.int64)}
    padded = {key: torch.cat([value, torch.zeros(1, 7, dtype=torch.int64)], 1) for key, value in short.items()}
    with torch.no_grad():
        alone, with_padding = encoder.eval()(short).pooled, encoder(padded).pooled
    torch.testing.assert_close(alone, with_padding, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(alone, make_causal(text_modality)[0].eval()(short).pooled, atol=1e-4)


def test_echo_sequences_by_hand():
    input_ids = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])  # [CLS] ... [SEP], then padding (id 0)
    attention_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    ids, second = echo_sequences(input_ids, attention_mask, pad_token_id=0)
    assert ids.tolist() == [[1, 5, 6, 2, 1, 5, 6, 2], [1, 7, 2, 1, 7, 2, 0, 0]]
    assert second.tolist() == [[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 0, 0]]


def test_echo_pooling_reads_the_second_copy_and_keeps_the_plain_tokens(text_modality):
    encoder, _ = make_causal(text_modality, pooling="echo")
    plain = make_causal(text_modality, max_position_embeddings=64)[0]  # echo sizes its table 2 x 32
    plain.load_state_dict(encoder.state_dict())
    sample = text_modality.held_out_dataset()[0]
    ids = sample["input_ids"][None, :9]
    short = {"input_ids": ids, "attention_mask": torch.ones(1, 9, dtype=torch.int64)}
    padded = {key: torch.cat([value, torch.zeros(1, 7, dtype=torch.int64)], 1) for key, value in short.items()}
    with torch.no_grad():
        echo, with_padding = encoder.eval()(short), encoder(padded)
        twice = plain.eval()({"input_ids": ids.repeat(1, 2), "attention_mask": torch.ones(1, 18, dtype=torch.int64)})
        alone = plain(short)
    info = text_modality.info()
    content = [9 + i for i, t in enumerate(ids[0].tolist()) if t not in (info.cls_token_id, info.sep_token_id)]
    assert len(content) >= 7  # the second copy, [CLS] (and any [SEP]) left out
    torch.testing.assert_close(echo.pooled, twice.tokens[:, content].mean(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(echo.tokens, alone.tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(with_padding.pooled, echo.pooled, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(echo.pooled, alone.pooled, atol=1e-3)


def test_echo_pooling_exports_to_onnx(text_modality, onnx_session):
    encoder = make_causal(text_modality, pooling="echo", architecture="llama")[0].eval()
    session = onnx_session(encoder)
    samples = [text_modality.held_out_dataset()[i] for i in range(5)]
    cut = [{key: sample[key][: 6 + 3 * i] for key in encoder.input_names} for i, sample in enumerate(samples)]
    batch = text_modality.collate(cut)  # rows of 6 to 18 tokens: padding follows the copies of the shorter ones
    assert batch["input_ids"].shape == (5, 18) and (batch["attention_mask"] == 0).any()
    (pooled,) = session.run(None, {key: batch[key].numpy() for key in encoder.input_names})
    with torch.no_grad():
        expected = encoder(batch).pooled.numpy()
    assert abs(pooled - expected).max() <= 1e-4


def test_target_counts_by_hand():
    sequences = TokenSequences.from_lists([[0, 3, 3, 1], [0, 2]])
    # targets: 3, 3, 1 and 2 (each sample's first token is not a target); add-one smoothed
    assert target_counts(sequences, 5).tolist() == [1.0, 2.0, 2.0, 3.0, 1.0]
    as_list = [sequences[i] for i in range(len(sequences))]
    assert target_counts(as_list, 5).tolist() == [1.0, 2.0, 2.0, 3.0, 1.0]


def test_causal_lm_learns_and_beats_random_init_and_unigram(text_modality):
    encoder, objective = make_causal(text_modality, hidden_size=64, intermediate_size=128)
    random_init = (copy.deepcopy(objective), copy.deepcopy(encoder))
    random_init[0].head._embeddings = random_init[1].get_input_embeddings()
    optimizer = torch.optim.Adam([*encoder.parameters(), *objective.parameters()], lr=3e-3)
    loader = DataLoader(text_modality.train_dataset(), batch_size=32, shuffle=True, collate_fn=text_modality.collate)
    torch.manual_seed(0)
    batches, losses = iter(loader), []
    for _ in range(60):
        output = objective([next(batches)], encoder.train())
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0, losses
    report = objective.report(None, encoder, text_modality, baseline=random_init)
    trained, random, unigram = report["held_out"], report["random_init"], report["unigram_baseline"]
    assert trained["targets"] > 1000
    assert random["loss"] == pytest.approx(math.log(text_modality.info().vocab_size), abs=1.0)
    # measured over repeated runs (the trained tokenizer's ids vary a little): trained 0.18-0.19,
    # random init 0.125-0.131, unigram 0.104
    assert trained["accuracy"] > max(unigram["accuracy"], random["accuracy"]) + 0.02
    assert trained["perplexity"] < unigram["perplexity"] < random["perplexity"]


RECIPE = """
name: causal-check
data: {{modality: text, source: {{type: default}}, max_length: 32}}
encoder: {{name: {encoder}, hidden_size: 32, num_layers: 1, num_heads: 2}}
objectives: [{{name: causal_lm}}]
train: {{steps: 2, batch_size: 4}}
"""


def test_validation_refuses_a_bidirectional_encoder_for_causal_lm():
    catalog = Catalog.load(["sslhub_text.plugin"], entry_points=False, python_registrations=False, strict=True)
    recipe = resolve_recipe(load_recipe_text(RECIPE.format(encoder="hf_causal"), "ok.yaml"), catalog)
    assert recipe.objectives[0].component.name == "causal_lm"
    with pytest.raises(RecipeError) as error:
        resolve_recipe(load_recipe_text(RECIPE.format(encoder="hf"), "bad.yaml"), catalog)
    message = str(error.value)
    assert "bad.yaml:5" in message and "objectives[0]" in message
    assert "objective 'causal_lm' needs a causal encoder" in message
    assert "encoder 'hf' does not declare provides=['causal']" in message


def test_bidirectional_architectures_and_encoders_are_refused(text_modality, make_encoder):
    context = BuildContext(modality=text_modality, modality_name="text")
    with pytest.raises(ValueError, match="'bert' is not a known decoder-only model"):
        CausalHFEncoder(CausalHFParams(architecture="bert", hidden_size=32, num_heads=2), context)
    context.encoder = make_encoder()
    with pytest.raises(ValueError, match="causal_lm needs a causal encoder"):
        CausalLMObjective(CausalLMParams(), context)
