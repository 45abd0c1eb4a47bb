"""Engine options that change the step: mixed precision, accumulation, LARS, several objectives."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sslhub.testing import run_recipe_for_steps

DATA = Path(__file__).resolve().parents[1] / "data"


def toy_recipe() -> dict:
    return yaml.safe_load((DATA / "toy_recipe.yaml").read_text())


@pytest.mark.parametrize(
    "overrides",
    [
        {"train.precision": "bf16"},
        {"train.precision": "fp16"},
        {"train.grad_accumulation": 2, "train.grad_clip": 1.0},
        {"train.optimizer": {"name": "lars", "lr": 2.0, "trust_coefficient": 0.02}},
        {"train.optimizer": {"name": "sgd", "lr": 0.1}, "train.schedule": "constant"},
    ],
    ids=["bf16", "fp16", "accumulation+clip", "lars", "sgd"],
)
def test_option_trains_and_loss_falls(toy_catalog, overrides):
    summary = run_recipe_for_steps(toy_recipe(), 40, catalog=toy_catalog, overrides=overrides)
    losses = summary["losses"]
    assert summary["steps"] == 40
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1, losses


def test_second_objective_starts_at_its_start_step(toy_catalog, tmp_path):
    recipe = toy_recipe()
    recipe["objectives"].append({"name": "toy_contrastive", "temperature": 0.5, "weight": 0.5, "start_step": 10})
    run_recipe_for_steps(recipe, 20, catalog=toy_catalog, out=tmp_path / "run")
    import json

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "toy_contrastive1/loss" not in records[5] and "toy_contrastive1/loss" in records[15]
    assert records[15]["loss"] == pytest.approx(
        records[15]["toy_contrastive0/loss"] + 0.5 * records[15]["toy_contrastive1/loss"], rel=1e-5
    )


def test_evaluation_caps_each_side_of_the_labeled_split(toy_catalog):
    recipe = toy_recipe()
    overrides = {"evaluate.max_samples": 100, "evaluate.linear_probe.epochs": 5}
    summary = run_recipe_for_steps(recipe, 2, catalog=toy_catalog, overrides=overrides, evaluate=True)
    assert summary["evaluation"]["eval_split"] == {"train": 100, "test": 100}  # of 256 each
    uncapped = run_recipe_for_steps(
        recipe, 2, catalog=toy_catalog, overrides={"evaluate.max_samples": None}, evaluate=True
    )
    assert uncapped["evaluation"]["eval_split"] == {"train": 256, "test": 256}


@pytest.mark.slow
def test_compiled_step_trains_with_one_graph_per_set_of_active_objectives(toy_catalog, tmp_path):
    import json

    import torch
    from torch._dynamo.utils import counters

    recipe = toy_recipe()
    recipe["objectives"].append({"name": "toy_contrastive", "temperature": 0.5, "weight": 0.5, "start_step": 10})
    torch._dynamo.reset()
    counters.clear()
    try:
        run_recipe_for_steps(recipe, 40, catalog=toy_catalog, out=tmp_path / "run", overrides={"train.compile": True})
        graphs = counters["stats"]["unique_graphs"]
    finally:
        torch._dynamo.reset()
    # One graph before the second objective joins, one after: the step itself must not recompile.
    assert graphs == 2
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first = [r["toy_contrastive0/loss"] for r in records]
    assert first[-1] < first[0] - 0.1, first
