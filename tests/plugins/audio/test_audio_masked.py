"""The masked_audio objective: span masks, k-means, frame grouping, and that both targets train."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sslhub import BuildContext, Encoder, EncoderOutput
from sslhub_audio.encoders.frame_transformer import FrameTransformerEncoder, FrameTransformerParams
from sslhub_audio.objectives.kmeans import assign_clusters, kmeans
from sslhub_audio.objectives.masked_audio import MaskedAudioObjective, MaskedAudioParams, group_frames
from sslhub_audio.objectives.span_mask import expected_mask_fraction, span_mask


@pytest.mark.parametrize(("probability", "span", "length"), [(0.065, 10, 100), (0.1, 3, 26), (0.3, 1, 50)])
def test_span_mask_fraction_matches_the_expected_value(probability, span, length):
    torch.manual_seed(0)
    mask = span_mask(4000, length, probability, span)
    assert mask.shape == (4000, length) and mask.dtype == torch.bool
    expected = expected_mask_fraction(length, probability, span)
    # The at-least-one-span rule adds a little for rows that drew no start.
    no_start = (1 - probability) ** length
    assert expected - 0.005 <= mask.float().mean().item() <= expected + no_start * span / length + 0.005
    assert mask.any(dim=1).all()


def test_span_mask_positionwise_rate_and_wav2vec2_interior_fraction():
    torch.manual_seed(1)
    mask = span_mask(20000, 60, 0.065, 10)
    rate = mask.float().mean(dim=0)
    assert rate[0].item() == pytest.approx(0.065, abs=0.01)  # only a start at 0 can cover frame 0
    assert rate[30:].mean().item() == pytest.approx(1 - 0.935**10, abs=0.01)  # ~0.49, as in wav2vec 2.0


def test_span_mask_spans_are_contiguous_runs_and_rows_never_empty():
    torch.manual_seed(0)
    mask = span_mask(500, 40, 0.001, 5)
    assert mask.any(dim=1).all()
    assert (mask.sum(dim=1) == 5).float().mean() > 0.9  # usually exactly the one forced span
    generator_masks = [span_mask(4, 30, 0.1, 4, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(*generator_masks)
    with pytest.raises(ValueError, match=r"start_probability must be in \(0, 1\]"):
        span_mask(2, 10, 0.0, 3)


def test_group_frames_stacks_the_mel_frames_under_each_encoder_frame():
    features = torch.arange(2 * 3 * 7, dtype=torch.float32).reshape(2, 3, 7)  # [B, n_mels, T]
    grouped = group_frames(features, divisor=2, num_frames=4)  # T padded to 8
    assert grouped.shape == (2, 4, 6)
    assert grouped[1, 1].tolist() == features[1, :, 2].tolist() + features[1, :, 3].tolist()
    assert grouped[0, 3].tolist() == features[0, :, 6].tolist() + [0.0, 0.0, 0.0]
    assert group_frames(features, 4, 1).shape == (2, 1, 12)  # cut to T' * divisor


def test_kmeans_finds_separable_clusters_and_assigns_like_brute_force():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]])
    truth = torch.arange(4).repeat_interleave(150)
    points = centres[truth] + 0.5 * torch.randn(600, 3)
    found = kmeans(points, 4, seed=0)
    labels = assign_clusters(points, found)
    for cluster in range(4):  # each true cluster maps to exactly one found cluster, and vice versa
        assert labels[truth == cluster].unique().numel() == 1
    assert labels.unique().numel() == 4
    torch.testing.assert_close(torch.sort(found, dim=0).values, torch.sort(centres, dim=0).values, atol=0.2, rtol=0)
    brute = torch.cdist(points, found).argmin(dim=1)
    assert torch.equal(labels, brute)
    assert torch.equal(kmeans(points, 4, seed=0), found)  # deterministic


def _setup(small_audio, target: str, **params):
    torch.manual_seed(0)
    context = BuildContext(modality=small_audio, modality_name="audio", seed=0)
    encoder = FrameTransformerEncoder(FrameTransformerParams(d_model=32, num_layers=2, num_heads=4), context)
    context.encoder = encoder
    defaults = {
        "mask_start_probability": 0.15,
        "mask_span": 2,
        "num_clusters": 16,
        "kmeans_clips": 64,
        "kmeans_iterations": 15,
    }
    objective = MaskedAudioObjective(MaskedAudioParams(target=target, **{**defaults, **params}), context)
    objective.prepare(small_audio, encoder)
    return encoder, objective


@pytest.mark.parametrize("target", ["reconstruct", "clusters"])
def test_masked_audio_loss_falls(small_audio, target):
    encoder, objective = _setup(small_audio, target)
    dataset = small_audio.train_dataset()
    batches = [
        small_audio.on_device(small_audio.collate([dataset[i] for i in range(start, start + 16)]))
        for start in (0, 16, 32)
    ]
    optimizer = torch.optim.Adam([*encoder.parameters(), *objective.parameters()], lr=2e-3)
    losses = []
    for step in range(40):
        out = objective([batches[step % 3]], encoder)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert 0 < out.metrics["masked_fraction"] < 1
    first, last = sum(losses[:6]) / 6, sum(losses[-6:]) / 6
    assert last < 0.8 * first, (first, last)


def test_reconstruct_loss_is_the_l1_or_l2_error_at_masked_frames_only(small_audio):
    encoder, objective = _setup(small_audio, "reconstruct", loss="l1")
    batch = small_audio.example_batch(3)
    torch.manual_seed(5)
    loss = objective([batch], encoder).loss
    torch.manual_seed(5)
    mask = span_mask(3, encoder.count_frames(batch), 0.15, 2)
    tokens = encoder.forward_frames(batch, mask, objective.mask_embedding).tokens
    targets = group_frames(batch["features"], 4, mask.shape[1])
    expected = (objective.head(tokens) - targets).abs()[mask].mean()
    torch.testing.assert_close(loss, expected)


def test_cluster_targets_come_from_saved_centroids(small_audio):
    encoder, objective = _setup(small_audio, "clusters")
    assert objective.centroids.shape == (16, 32 * 4)
    state = objective.state_dict()
    assert "centroids" in state
    _, other = _setup(small_audio, "clusters", kmeans_clips=32)
    assert not torch.equal(other.centroids, objective.centroids)
    other.load_state_dict(state)
    assert torch.equal(other.centroids, objective.centroids)
    metrics = objective.held_out_metrics(small_audio.example_batch(4), encoder)
    assert set(metrics) == {"masked_loss", "masked_accuracy"}
    assert metrics == objective.held_out_metrics(small_audio.example_batch(4), encoder)  # fixed masks
    # Fitting leaves the global RNG alone (parameter initialisation is what draws from it).
    torch.manual_seed(3)
    state = torch.random.get_rng_state()
    refit = objective.fit_centroids(small_audio, encoder, seed=0, device=torch.device("cpu"))
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.testing.assert_close(refit, objective.centroids)  # deterministic in the seed


def test_masked_audio_runs_with_a_wav2vec2_encoder(small_audio):
    from sslhub_audio.encoders.wav2vec2 import Wav2Vec2Encoder, Wav2Vec2Params

    context = BuildContext(modality=small_audio)
    context.encoder = Wav2Vec2Encoder(
        Wav2Vec2Params(embed_dim=32, num_layers=1, num_heads=2, ff_dim=64, pos_conv_kernel=8, pos_conv_groups=4),
        context,
    )
    objective = MaskedAudioObjective(MaskedAudioParams(mask_span=2), context)
    out = objective([small_audio.example_batch(2)], context.encoder)
    out.loss.backward()
    assert torch.isfinite(out.loss) and objective.mask_embedding.grad is not None


class _PooledOnly(Encoder):
    feature_dim = 8

    def forward(self, batch):
        return EncoderOutput(pooled=torch.zeros(1, 8))


def test_encoders_without_frame_access_are_refused_in_words(small_audio):
    with pytest.raises(ValueError, match="needs an encoder that declares frame_masking"):
        MaskedAudioObjective(MaskedAudioParams(), BuildContext(modality=small_audio, encoder=_PooledOnly()))
    assert F.mse_loss is not None


def test_clusters_need_prepare_or_a_checkpoint(small_audio):
    encoder, fitted = _setup(small_audio, "clusters")
    context = BuildContext(modality=small_audio, modality_name="audio", seed=0, encoder=encoder)
    params = MaskedAudioParams(target="clusters", num_clusters=16, kmeans_clips=64, kmeans_iterations=15)
    fresh = MaskedAudioObjective(params, context)
    with pytest.raises(RuntimeError, match="centroids are not fitted; call objective.prepare"):
        fresh([small_audio.example_batch(2)], encoder)
    fresh.load_state_dict(fitted.state_dict())  # what evaluate/export/resume do instead of prepare
    assert torch.equal(fresh.centroids, fitted.centroids)
    assert torch.isfinite(fresh([small_audio.example_batch(2)], encoder).loss)
