"""The training loop's step: where its one device read falls, and what it leaves out when not asked for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from sslhub import training
from sslhub.errors import NonFiniteLossError
from sslhub.testing import run_recipe_for_steps

DATA = Path(__file__).resolve().parents[1] / "data"


def toy_recipe() -> dict:
    return yaml.safe_load((DATA / "toy_recipe.yaml").read_text())


@pytest.fixture
def step_events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``update`` (an optimizer step) and ``read`` (the step's device read) in the order they happen."""
    events: list[str] = []
    read = training._read_together
    monkeypatch.setattr(training, "_read_together", lambda *args: events.append("read") or read(*args))
    step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: events.append("update") or step(self, *a, **k))
    return events


def test_under_raise_the_step_reads_the_device_after_queuing_the_update(toy_catalog, step_events):
    # As a plain loop reads its loss: on a GPU the host queues the optimizer while backward still runs.
    run_recipe_for_steps(toy_recipe(), 3, catalog=toy_catalog)
    assert step_events == ["update", "read"] * 3


def test_skip_step_reads_before_the_update_it_may_skip(toy_catalog, step_events):
    run_recipe_for_steps(toy_recipe(), 3, catalog=toy_catalog, overrides={"train.nonfinite": "skip_step"})
    assert step_events == ["read", "update"] * 3


def test_under_raise_a_nan_step_stops_before_a_checkpoint_holds_its_update(toy_catalog, tmp_path: Path):
    overrides = {"objectives.0.nan_at_step": 3, "train.checkpoint_every": 2}
    with pytest.raises(NonFiniteLossError, match="step 3 from objective 'toy_contrastive'"):
        run_recipe_for_steps(toy_recipe(), 6, catalog=toy_catalog, out=tmp_path / "run", overrides=overrides)
    manifest = json.loads((tmp_path / "run" / "checkpoints" / "manifest.json").read_text())
    assert [entry["step"] for entry in manifest["checkpoints"]] == [2]
    for path in (tmp_path / "run" / "checkpoints").glob("*.pt"):
        weights = torch.load(path, weights_only=False)["model"]
        assert all(torch.isfinite(value).all() for value in weights.values() if value.is_floating_point())


def test_without_grad_clip_the_gradients_are_left_as_backward_made_them(toy_catalog, monkeypatch):
    # The norm is still taken (finite check, logged grad_norm), but no pass multiplies every gradient by 1.
    passes = []
    clip = torch.nn.utils.clip_grads_with_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grads_with_norm_", lambda *a, **k: passes.append(1) or clip(*a, **k))
    summary = run_recipe_for_steps(toy_recipe(), 2, catalog=toy_catalog)
    assert passes == [] and len(summary["losses"]) == 2
    run_recipe_for_steps(toy_recipe(), 2, catalog=toy_catalog, overrides={"train.grad_clip": 1.0})
    assert passes == [1, 1]
