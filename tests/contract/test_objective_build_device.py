"""Objectives are built beside an encoder that already sits on the run's device.

An objective that probes its encoder while it is built (to size a decoder from the encoder's
output) must make its example batch on ``context.device``; one made on the CPU fails on the
first GPU run. The ``meta`` device stands in for a GPU here: an encoder moved there rejects
CPU input just as a CUDA one does, so the mistake shows on a machine without a GPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from sslhub.cli import load_and_resolve
from sslhub.engine import Run

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted(path.stem for path in (REPO / "recipes").glob("*.yaml"))
#: recipes whose example batch cannot be made on ``meta`` for a reason of meta's own
NO_META_EXAMPLE = {
    "autoencoder_audio": "the audio featurizer's autocast guard has no meta backend (unsupported scalarType)",
}


def recipe_params() -> list:
    return [
        pytest.param(name, marks=[pytest.mark.skip(reason=NO_META_EXAMPLE[name])] if name in NO_META_EXAMPLE else [])
        for name in RECIPES
    ]


@pytest.mark.parametrize("name", recipe_params())
def test_objectives_build_beside_an_encoder_on_another_device(name: str, tmp_path: Path):
    overrides = ["train.device=cpu", "evaluate.enabled=false", "export=null"]
    recipe = load_and_resolve(REPO / "recipes" / f"{name}.yaml", overrides, [])
    components = Run(recipe, tmp_path / "run", show_progress=False).components
    modality = components.modality()
    components.device = torch.device("meta")
    encoders = components.encoders(modality)
    objectives = components.objectives(modality, encoders)
    assert objectives
    assert all(p.device.type == "meta" for objective in objectives for p in objective.parameters())
