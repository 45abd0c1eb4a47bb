"""SLIP-style training: the vision plugin's ``simclr`` on the image encoder of image-caption pairs."""

from __future__ import annotations

import math

import pytest
import torch

from sslhub import BuildContext
from sslhub.testing import catalog_with, check_objective_learns
from sslhub_vision.augmentations import ColorJitter, ColorJitterParams, RandomResizedCrop, RandomResizedCropParams
from sslhub_vision.objectives.simclr import SimCLRObjective, SimCLRParams


def test_simclr_accepts_the_image_encoder_of_pairs():
    catalog = catalog_with("sslhub_vision.plugin", "sslhub_text.plugin", "sslhub_multimodal.plugin")
    simclr = catalog.registry("objective").get("simclr")
    pairs = catalog.registry("modality").get("image_text")
    # image_text is a composite of image and text: image components (simclr on `encoder: image`) accept it
    assert simclr.modalities == {"image"} and "image" in pairs.modalities


def test_simclr_learns_on_pair_batches_and_leaves_the_text_encoder_alone(digit_pairs, make_encoders):
    encoders = make_encoders()
    image, text = encoders["image"], encoders["text"]
    context = BuildContext(modality=digit_pairs, modality_name="image_text", encoder=image)
    objective = SimCLRObjective(SimCLRParams(temperature=0.2, projection_dim=16), context)
    dataset = digit_pairs.train_dataset()
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
    batches = [
        digit_pairs.on_device(digit_pairs.collate([dataset[i] for i in order[b * 48 : (b + 1) * 48]])) for b in range(3)
    ]
    assert {"image", "input_ids", "attention_mask"} <= batches[0].keys()  # whole pairs, captions included
    augment = [RandomResizedCrop(RandomResizedCropParams(scale=(0.5, 1.0))), ColorJitter(ColorJitterParams())]
    torch.manual_seed(0)
    losses = check_objective_learns(objective, image, batches, augmentations=augment, steps=30, lr=3e-3, min_drop=0.05)
    assert losses[0] == pytest.approx(math.log(2 * 48 - 1), rel=0.15)  # each of 2B anchors picks 1 of 2B - 1 at init
    assert all(p.grad is None for p in text.parameters())  # only the image tower is trained
