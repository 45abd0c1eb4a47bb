"""clip_contrastive, its NT-Xent loss and the spec_resized_crop augmentation."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from sslhub import BuildContext
from sslhub_audio.augmentations.resized_crop import ResizedCropParams, SpecResizedCrop
from sslhub_audio.augmentations.spec_augment import SpecMaskParams, TimeMask
from sslhub_audio.encoders.frame_transformer import FrameTransformerEncoder, FrameTransformerParams
from sslhub_audio.losses.ntxent import ntxent_logits, ntxent_loss
from sslhub_audio.objectives.clip_contrastive import ClipContrastiveObjective, ClipContrastiveParams


def test_ntxent_is_low_for_matching_pairs_and_near_log_candidates_for_unrelated_ones():
    torch.manual_seed(0)
    z = torch.randn(32, 16)
    matching = ntxent_loss(z, z + 0.01 * torch.randn(32, 16), temperature=0.1)
    unrelated = ntxent_loss(z, torch.randn(32, 16), temperature=1.0)
    assert matching.item() < 0.1
    # 63 candidates with near-equal similarities: about log(63).
    assert unrelated.item() == pytest.approx(torch.log(torch.tensor(63.0)).item(), abs=0.3)


def test_ntxent_logits_exclude_self_and_point_each_view_at_its_partner():
    z0, z1 = torch.randn(3, 4), torch.randn(3, 4)
    logits, labels = ntxent_logits(z0, z1, temperature=0.5)
    assert logits.shape == (6, 6)
    assert torch.isinf(logits.diagonal()).all()
    assert labels.tolist() == [3, 4, 5, 0, 1, 2]
    with pytest.raises(ValueError, match="equal shapes"):
        ntxent_logits(z0, torch.randn(2, 4), 0.5)


def test_resized_crop_at_scale_one_is_the_identity_and_keeps_the_shape():
    torch.manual_seed(0)
    features = torch.randn(5, 32, 51)
    identity = SpecResizedCrop(ResizedCropParams(time_scale=(1.0, 1.0), freq_scale=(1.0, 1.0)))
    assert torch.allclose(identity({"features": features})["features"], features, atol=1e-4)
    never = SpecResizedCrop(ResizedCropParams(p=0.0))
    assert torch.allclose(never({"features": features})["features"], features, atol=1e-4)
    cropped = SpecResizedCrop(ResizedCropParams())({"features": features, "waveform": torch.zeros(5, 10)})
    assert cropped["features"].shape == features.shape and "waveform" in cropped
    assert (cropped["features"] - features).abs().mean() > 0.3


def test_resized_crop_zoomed_out_reads_the_clip_mean_past_the_edges():
    features = torch.full((2, 8, 20), 3.0)
    out = SpecResizedCrop(ResizedCropParams(time_scale=(1.5, 1.5), freq_scale=(1.5, 1.5)))({"features": features})
    assert torch.allclose(out["features"], features)


def test_resized_crop_refuses_bad_ranges_and_bad_input():
    with pytest.raises(ValidationError, match="time_scale"):
        ResizedCropParams(time_scale=(1.2, 0.8))
    with pytest.raises(ValueError, match=r"needs batch\['features'\]"):
        SpecResizedCrop(ResizedCropParams())({"waveform": torch.zeros(2, 100)})


STEPS = 60


@pytest.fixture
def one_thread():
    """One intra-op thread: on a busy 2-core machine torch's default thread count makes this test 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_clip_contrastive_loss_falls_and_the_encoder_beats_its_random_init(small_audio, one_thread, held_out_knn):
    torch.manual_seed(0)
    context = BuildContext(modality=small_audio, modality_name="audio", seed=0)
    encoder = FrameTransformerEncoder(FrameTransformerParams(d_model=32, num_layers=1, num_heads=4), context)
    context.encoder = encoder
    objective = ClipContrastiveObjective(ClipContrastiveParams(projection_dim=32), context)
    augment = torch.nn.Sequential(SpecResizedCrop(ResizedCropParams()), TimeMask(SpecMaskParams(max_width=6)))
    random_init = held_out_knn(encoder, small_audio)
    dataset = small_audio.train_dataset()
    batches = [
        small_audio.on_device(small_audio.collate([dataset[i] for i in range(start, start + 32)]))
        for start in range(0, 128, 32)
    ]
    optimizer = torch.optim.Adam([*encoder.parameters(), *objective.parameters()], lr=2e-3)
    losses = []
    for step in range(STEPS):
        batch = batches[step % len(batches)]
        out = objective([augment(dict(batch)), augment(dict(batch))], encoder)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.8 * first, (first, last)
    assert 0 <= out.metrics["contrastive_accuracy"] <= 1
    trained = held_out_knn(encoder, small_audio)
    assert trained > random_init + 0.05, (random_init, trained)


def test_clip_contrastive_needs_two_views(audio_context, small_audio):
    encoder = FrameTransformerEncoder(FrameTransformerParams(d_model=16, num_layers=1, num_heads=2), audio_context)
    audio_context.encoder = encoder
    objective = ClipContrastiveObjective(ClipContrastiveParams(), audio_context)
    with pytest.raises(ValueError, match="2 views"):
        objective([small_audio.example_batch(2)], encoder)
