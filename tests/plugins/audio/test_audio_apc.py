"""APC: the loss by hand, the causal encoder's causality, learning vs random init, and validation refusing a bidirectional encoder."""

from __future__ import annotations

import copy

import pytest
import torch

from sslhub import BuildContext
from sslhub.catalog import Catalog
from sslhub.errors import RecipeError
from sslhub.recipe import resolve_recipe
from sslhub.recipe_yaml import load_recipe_text
from sslhub_audio.encoders.causal_frame_transformer import (
    CausalFrameTransformerEncoder,
    CausalFrameTransformerParams,
)
from sslhub_audio.modality import AudioModality, AudioParams
from sslhub_audio.objectives.apc import APCObjective, APCParams, apc_loss, stack_frames


def test_apc_loss_by_hand():
    frames = torch.tensor([[[1.0], [2.0], [4.0], [8.0]]])  # [B=1, T'=4, F=1]
    predictions = torch.tensor([[[3.0], [4.0], [0.0], [0.0]]])
    # n=2: frame 0 predicts frame 2 (4), frame 1 predicts frame 3 (8): |3-4| + |4-8| over 2 values
    assert apc_loss(predictions, frames, 2).item() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="steps_ahead"):
        apc_loss(predictions, frames, 4)


def test_stack_frames_puts_each_encoder_frames_mel_frames_together():
    features = torch.arange(2 * 5, dtype=torch.float32).reshape(1, 2, 5)  # [B, n_mels=2, T=5]
    stacked = stack_frames(features, divisor=2, num_frames=3)
    # encoder frame j holds mel frames 2j, 2j+1 (bins then time), zero-padded at the end
    assert stacked.tolist() == [[[0.0, 1.0, 5.0, 6.0], [2.0, 3.0, 7.0, 8.0], [4.0, 0.0, 9.0, 0.0]]]


def audio_setup(strides=(1,)):
    torch.manual_seed(0)
    modality = AudioModality(AudioParams(source={"type": "default", "num_clips": 80}, duration=0.5))
    context = BuildContext(modality=modality, modality_name="audio")
    encoder = CausalFrameTransformerEncoder(
        CausalFrameTransformerParams(d_model=32, num_layers=1, strides=list(strides)), context
    )
    context.encoder = encoder
    return modality, encoder, APCObjective(APCParams(), context)


@pytest.mark.parametrize("strides", [(1,), (2, 2)])
def test_causal_encoder_frames_do_not_see_the_future(strides):
    modality, encoder, _ = audio_setup(strides)
    features = modality.on_device(modality.example_batch(2))["features"]
    changed = features.clone()
    cut = 24  # mel frames from here on change; encoder frame j sees mel frames <= j * divisor
    changed[..., cut:] += torch.randn_like(changed[..., cut:])
    encoder.eval()
    with torch.no_grad():
        before, after = encoder({"features": features}).tokens, encoder({"features": changed}).tokens
    seen = cut // encoder.frame_rate_divisor + (cut % encoder.frame_rate_divisor > 0)
    assert torch.allclose(before[:, :seen], after[:, :seen], atol=1e-5)
    assert not torch.allclose(before[:, seen:], after[:, seen:], atol=1e-3)


def test_apc_learns_and_beats_random_init(held_out_knn):
    modality, encoder, objective = audio_setup()
    random_init = copy.deepcopy(encoder)
    data = modality.train_dataset()
    batch = modality.on_device(modality.collate([data[i] for i in range(len(data))]))
    optimizer = torch.optim.Adam([*encoder.parameters(), *objective.parameters()], lr=3e-3)
    losses = []
    for _ in range(40):
        output = objective([batch], encoder.train())
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5]), losses
    assert output.metrics["l1"] < output.metrics["copy_l1"], "APC must beat copying the present frame"
    assert held_out_knn(encoder, modality) > held_out_knn(random_init, modality)


RECIPE = """
name: apc-check
data: {{modality: audio, source: {{type: default, num_clips: 20}}, duration: 0.5}}
encoder: {{name: {encoder}, d_model: 32, num_layers: 1}}
objectives: [{{name: apc}}]
train: {{steps: 2, batch_size: 4}}
"""


def test_validation_refuses_a_bidirectional_encoder_and_accepts_a_causal_one():
    catalog = Catalog.load(["sslhub_audio.plugin"], entry_points=False, python_registrations=False, strict=True)
    recipe = resolve_recipe(load_recipe_text(RECIPE.format(encoder="causal_frame_transformer"), "ok.yaml"), catalog)
    assert recipe.objectives[0].component.name == "apc"
    with pytest.raises(RecipeError) as error:
        resolve_recipe(load_recipe_text(RECIPE.format(encoder="frame_transformer"), "bad.yaml"), catalog)
    message = str(error.value)
    assert "bad.yaml:5" in message and "objectives[0]" in message
    assert "objective 'apc' needs a causal encoder" in message
    assert "encoder 'frame_transformer' does not declare provides=['causal']" in message


def test_apc_refuses_a_built_encoder_that_is_not_causal():
    from sslhub_audio.encoders.frame_transformer import FrameTransformerEncoder, FrameTransformerParams

    modality = AudioModality(AudioParams(source={"type": "default", "num_clips": 10}, duration=0.5))
    context = BuildContext(modality=modality, modality_name="audio")
    context.encoder = FrameTransformerEncoder(FrameTransformerParams(d_model=32, num_layers=1), context)
    with pytest.raises(ValueError, match="apc needs a causal encoder"):
        APCObjective(APCParams(), context)
