"""The simcse objective: loss against a hand computation, dropout-only views, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from sslhub import BuildContext
from sslhub_text.objectives.simcse import SimCSEObjective, SimCSEParams, simcse_logits_and_labels


def make_objective(text_modality, encoder, **params) -> SimCSEObjective:
    context = BuildContext(modality=text_modality, modality_name="text", encoder=encoder)
    return SimCSEObjective(SimCSEParams(**params), context)


def test_logits_match_a_hand_computation():
    torch.manual_seed(0)
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    logits, labels = simcse_logits_and_labels(a, b, temperature=0.05)
    for i in range(3):
        for j in range(3):
            cosine = float(a[i] @ b[j]) / (float(a[i].norm()) * float(b[j].norm()))
            assert logits[i, j].item() == pytest.approx(cosine / 0.05, rel=1e-4, abs=1e-4)
    assert labels.tolist() == [0, 1, 2]


def test_loss_matches_a_hand_computation(text_modality, make_encoder):
    encoder = make_encoder(dropout=0.0)  # no dropout: both views encode identically
    objective = make_objective(text_modality, encoder, temperature=0.1, symmetric=False)
    batch = text_modality.collate([text_modality.train_dataset()[i] for i in range(6)])
    output = objective([batch, batch], encoder)
    z = F.normalize(encoder(batch).pooled.detach(), dim=1)
    expected = 0.0
    for i in range(6):
        scores = [float(z[i] @ z[j]) / 0.1 for j in range(6)]
        expected += -scores[i] + math.log(sum(math.exp(s) for s in scores))
    assert output.loss.item() == pytest.approx(expected / 6, rel=1e-4)
    # identical views: every anchor's best match is itself
    assert float(output.metrics["contrastive_accuracy"]) == 1.0


def test_symmetric_loss_averages_both_directions(text_modality, make_encoder):
    torch.manual_seed(0)
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    forward = F.cross_entropy(*simcse_logits_and_labels(a, b, 0.05))
    backward = F.cross_entropy(*simcse_logits_and_labels(b, a, 0.05))
    assert forward.item() != pytest.approx(backward.item())
    encoder = make_encoder()
    objective = make_objective(text_modality, encoder, projection_dim=16)
    assert sum(p.numel() for p in objective.parameters()) == 32 * 32 + 32 + 32 * 16 + 16


def test_dropout_makes_the_two_views_differ(text_modality, make_encoder):
    encoder = make_encoder(dropout=0.1).train()
    objective = make_objective(text_modality, encoder)
    batch = text_modality.collate([text_modality.train_dataset()[i] for i in range(8)])
    torch.manual_seed(0)
    output = objective([batch, batch], encoder)
    assert 0.0 < output.loss.item() < math.log(8) * 2
    encoder.eval()  # no dropout: the same batch twice gives identical embeddings
    torch.testing.assert_close(encoder(batch).pooled, encoder(batch).pooled)


def test_bad_arguments(text_modality, make_encoder):
    with pytest.raises(ValidationError):
        SimCSEParams(temperature=0.0)
    objective = make_objective(text_modality, make_encoder())
    batch = text_modality.collate([text_modality.train_dataset()[i] for i in range(4)])
    with pytest.raises(ValueError, match="2 views"):
        objective([batch], make_encoder())
    with pytest.raises(ValueError, match="encoder"):
        SimCSEObjective(SimCSEParams(), BuildContext(modality=text_modality, modality_name="text"))


def test_simcse_loss_falls(text_modality, make_encoder):
    encoder = make_encoder(dropout=0.1).train()
    objective = make_objective(text_modality, encoder)
    optimizer = torch.optim.Adam([*encoder.parameters(), *objective.parameters()], lr=1e-3)
    dataset = text_modality.train_dataset()
    torch.manual_seed(0)
    losses = []
    for step in range(30):
        batch = text_modality.collate([dataset[(step * 32 + i) % len(dataset)] for i in range(32)])
        loss = objective([batch, batch], encoder).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)
