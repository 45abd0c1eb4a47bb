"""KL term against the closed form, reconstruction errors against hand computations, corruption."""

from __future__ import annotations

import math

import pytest
import torch

from sslhub_autoencoder.corruption import corrupt
from sslhub_autoencoder.heads import LatentHead
from sslhub_autoencoder.losses import gaussian_kl, reconstruction_error


def test_kl_matches_the_closed_form_on_a_hand_example():
    # sample 0: mu = (1, 0), var = (1, 2) -> 0.5 * [(1 + 1 - 1 - 0) + (0 + 2 - 1 - log 2)] = 1 - log(2) / 2
    # sample 1: the prior itself -> 0
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    kl = gaussian_kl(mu, logvar)
    assert kl.shape == (2,)
    assert kl[0].item() == pytest.approx(1.0 - math.log(2.0) / 2, abs=1e-6)
    assert kl[1].item() == pytest.approx(0.0, abs=1e-7)


def test_kl_matches_torch_distributions_on_spatial_latents():
    torch.manual_seed(0)
    mu, logvar = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    posterior = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    prior = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(posterior, prior).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected, rtol=1e-5, atol=1e-5)


def test_kl_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="mu and logvar must have the same shape"):
        gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 4))


def test_reconstruction_errors_by_hand():
    output = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 3.0]])
    torch.testing.assert_close(reconstruction_error(output, target, "mse"), torch.tensor([2.5, 2.0]))
    torch.testing.assert_close(reconstruction_error(output, target, "l1"), torch.tensor([1.5, 1.0]))


def test_bce_on_logits_equals_bce_on_probabilities():
    torch.manual_seed(0)
    logits, target = torch.randn(4, 6), torch.rand(4, 6)
    p = logits.sigmoid()
    by_hand = -(target * p.log() + (1 - target) * (1 - p).log()).mean(dim=1)
    torch.testing.assert_close(reconstruction_error(logits, target, "bce", logits=True), by_hand, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(reconstruction_error(p, target, "bce"), by_hand, rtol=1e-4, atol=1e-5)
    # mse on logits compares the sigmoid of the logits
    torch.testing.assert_close(
        reconstruction_error(logits, target, "mse", logits=True), (p - target).square().mean(dim=1)
    )


def test_reconstruction_error_rejects_unknown_loss():
    with pytest.raises(ValueError, match="unknown reconstruction loss 'l3'; choose one of mse, l1, bce"):
        reconstruction_error(torch.zeros(1, 2), torch.zeros(1, 2), "l3")


def test_dropout_noise_drops_the_requested_share_and_leaves_the_input_alone():
    torch.manual_seed(0)
    x = torch.ones(64, 256)
    out = corrupt(x, "dropout", 0.3)
    assert torch.equal(x, torch.ones(64, 256))
    assert set(out.unique().tolist()) == {0.0, 1.0}
    assert (out == 0).float().mean().item() == pytest.approx(0.3, abs=0.01)


def test_gaussian_noise_has_the_requested_std_and_respects_the_range():
    torch.manual_seed(0)
    x = torch.full((64, 256), 0.5)
    assert (corrupt(x, "gaussian", 0.1) - x).std().item() == pytest.approx(0.1, rel=0.03)
    clamped = corrupt(x, "gaussian", 2.0, (0.0, 1.0))
    assert clamped.min() >= 0 and clamped.max() <= 1


def test_swap_noise_takes_swapped_cells_from_their_own_column_and_needs_rows():
    torch.manual_seed(0)
    rows = torch.arange(128 * 6, dtype=torch.float32).reshape(128, 6)
    out = corrupt(rows, "swap", 0.3)
    assert torch.equal(rows, torch.arange(128 * 6, dtype=torch.float32).reshape(128, 6))
    for column in range(6):
        assert set(out[:, column].tolist()) <= set(rows[:, column].tolist())
    # 0.3 swapped, less the draws that pick the row itself (1/128)
    assert (out != rows).float().mean().item() == pytest.approx(0.3 * (1 - 1 / 128), abs=0.03)
    with pytest.raises(ValueError, match=r"swap noise needs table rows \[batch, columns\], got shape \(2, 3, 4\)"):
        corrupt(torch.zeros(2, 3, 4), "swap", 0.3)
    with pytest.raises(ValueError, match=r"noise_level for swap noise must be in \[0, 1\), got 1.0"):
        corrupt(rows, "swap", 1.0)


def test_latent_head_samples_in_training_and_returns_the_mean_in_eval():
    torch.manual_seed(0)
    head = LatentHead(8, 3, variational=True, channel_axis=1)
    features = torch.randn(5, 8, 2, 2)
    code, mu, logvar = head(features)
    assert code.shape == mu.shape == logvar.shape == (5, 3, 2, 2)
    assert not torch.equal(code, mu)
    head.eval()
    code, mu, _ = head(features)
    assert torch.equal(code, mu)
