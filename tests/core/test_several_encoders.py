"""Recipes with one encoder per key (encoders:), objectives that use one or several of them."""

from __future__ import annotations

import json

import pytest
import torch

from sslhub.catalog import Catalog
from sslhub.engine import Run
from sslhub.errors import RecipeError
from sslhub.recipe import resolve_recipe
from sslhub.recipe_yaml import load_recipe_text

RECIPE = """\
name: pair
data: {modality: toy_vectors, samples: 256}
augment: [{name: toy_noise}]
encoders:
  left: {name: toy_mlp, out: 16}
  right: {name: toy_mlp, out: 8}
objectives:
  - {name: toy_pair_contrastive}
  - {name: toy_contrastive, encoder: left, weight: 0.5}
train: {steps: 40, batch_size: 64, optimizer: {lr: 1.0e-2}, checkpoint_every: 40, log_every: 5}
evaluate: {knn: {k: 10}, linear_probe: {epochs: 30}}
export: {onnx: {opset: 18}}
"""


@pytest.fixture
def catalog(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "data"))
    return Catalog.load(["toy_plugin", "toy_pair_plugin"], entry_points=False, python_registrations=False)


def resolve(text: str, catalog: Catalog):
    return resolve_recipe(load_recipe_text(text, "pair.yaml"), catalog)


def problems(text: str, catalog: Catalog) -> list[str]:
    with pytest.raises(RecipeError) as info:
        resolve(text, catalog)
    return [str(issue) for issue in info.value.issues]


def test_several_encoders_train_evaluate_and_export(catalog, tmp_path):
    recipe = resolve(RECIPE, catalog)
    assert sorted(recipe.encoders) == ["left", "right"]
    summary = Run(recipe, tmp_path / "run", show_progress=False).execute()
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] - 0.3
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"toy_pair_contrastive/loss", "toy_contrastive/loss"} <= record.keys()
    trained, baseline = summary["evaluation"]["trained"], summary["evaluation"]["random_init"]
    assert {"left/knn_accuracy", "right/knn_accuracy", "left/linear_probe_accuracy"} <= trained.keys()
    assert trained["left/knn_accuracy"] > baseline["left/knn_accuracy"]
    assert {"left/few_shot_5_accuracy", "right/few_shot_5_std"} <= trained.keys()
    # the toy modality's raw input feeds both encoders alike: scored once, compared with each
    assert "knn_accuracy" in summary["evaluation"]["raw_input"]
    assert any(
        line.endswith(
            f"raw-input baseline on left kNN: {trained['left/knn_accuracy']:.4f} vs "
            f"{summary['evaluation']['raw_input']['knn_accuracy']:.4f}"
        )
        for line in summary["evaluation"]["verdict"]
    )
    assert sorted(summary["export"]) == ["left", "right"]
    for key in ("left", "right"):
        assert (tmp_path / "run" / "onnx" / key / "model.onnx").exists()
        assert summary["export"][key]["passed"]
    resolved = (tmp_path / "run" / "recipe.yaml").read_text()
    assert "encoders:" in resolved and "encoder: left" in resolved


def test_objective_needing_several_encoders_in_a_one_encoder_recipe(catalog):
    text = RECIPE.replace(
        "encoders:\n  left: {name: toy_mlp, out: 16}\n  right: {name: toy_mlp, out: 8}", "encoder: {name: toy_mlp}"
    ).replace(", encoder: left", "")
    assert problems(text, catalog) == [
        "pair.yaml:6: objectives[0]: objective 'toy_pair_contrastive' needs encoders for left, right; "
        "give them under encoders: (this recipe has no left, right)"
    ]


def test_missing_encoder_key_and_unknown_key(catalog):
    text = RECIPE.replace("  right: {name: toy_mlp, out: 8}\n", "").replace("encoder: left", "encoder: middle")
    assert problems(text, catalog) == [
        "pair.yaml:7: objectives[0]: objective 'toy_pair_contrastive' needs encoders for left, right; "
        "give them under encoders: (this recipe has no right)",
        "pair.yaml:8: objectives[1].encoder: 'middle' is not one of the encoders: objective 'toy_contrastive' "
        "trains one encoder, so name it (left)",
    ]


def test_one_encoder_objective_must_name_its_encoder(catalog):
    text = RECIPE.replace(", encoder: left", "")
    assert problems(text, catalog) == [
        "pair.yaml:9: objectives[1].encoder: is missing: objective 'toy_contrastive' trains one encoder, "
        "so name it (left, right)"
    ]


def test_encoder_and_encoders_together(catalog):
    text = RECIPE.replace("encoders:", "encoder: {name: toy_mlp}\nencoders:")
    assert problems(text, catalog) == [
        "pair.yaml:5: encoders: give either encoder (one) or encoders (one per modality part), not both"
    ]


ONE_ENCODER = RECIPE.replace(
    "encoders:\n  left: {name: toy_mlp, out: 16}\n  right: {name: toy_mlp, out: 8}", "encoder: {name: toy_mlp}"
).replace("  - {name: toy_pair_contrastive}\n", "")


def test_encoder_is_the_default_key_of_the_encoders_mapping(catalog):
    recipe = resolve(ONE_ENCODER.replace(", encoder: left", ""), catalog)
    assert list(recipe.encoders) == ["default"] and recipe.encoders["default"].path == "encoder"
    assert [o.encoder_key for o in recipe.objectives] == ["default"]
    # written back in its own form, the objective's key implied
    resolved = recipe.resolved_dict()
    assert "encoders" not in resolved and resolved["encoder"]["name"] == "toy_mlp"
    assert "encoder" not in resolved["objectives"][0]


def test_objective_may_name_the_default_encoder_but_no_other(catalog):
    assert resolve(ONE_ENCODER.replace("encoder: left", "encoder: default"), catalog).objectives[0].encoder_key == (
        "default"
    )
    assert problems(ONE_ENCODER, catalog) == [
        "pair.yaml:6: objectives[0].encoder: 'left' is not one of the encoders: objective 'toy_contrastive' "
        "trains one encoder, so name it (default)"
    ]


def test_one_key_of_encoders_needs_no_name_on_the_objective(catalog):
    text = RECIPE.replace("  right: {name: toy_mlp, out: 8}\n", "").replace("  - {name: toy_pair_contrastive}\n", "")
    recipe = resolve(text.replace(", encoder: left", ""), catalog)
    assert [o.encoder_key for o in recipe.objectives] == ["left"]


def test_default_is_reserved_for_encoder(catalog):
    text = RECIPE.replace("  left:", "  default:")
    assert problems(text, catalog) == [
        "pair.yaml:4: encoders: 'default' is the key of encoder:; name the encoders: keys otherwise"
    ]


def test_checkpoint_from_before_the_encoder_mapping_still_loads(catalog, tmp_path):
    from sslhub.building import TrainingModule

    recipe = resolve(ONE_ENCODER.replace(", encoder: left", ""), catalog)
    run = Run(recipe, tmp_path / "run", show_progress=False)
    modality = run.components.modality()
    encoders = run.components.encoders(modality)
    module: TrainingModule = run.components.training_module(encoders, run.components.objectives(modality, encoders))
    state = module.state_dict()
    # what one-encoder runs wrote before: encoder.W rather than encoder.default.W
    old = {key.replace("encoder.default.", "encoder."): value.clone() + 1 for key, value in state.items()}
    assert not any(key.startswith("encoder.default.") for key in old)
    module.load_state_dict(old)
    for key, value in module.state_dict().items():
        assert torch.equal(value, old[key.replace("encoder.default.", "encoder.")])


def test_checkpoint_of_several_encoders_loads_unchanged(catalog, tmp_path):
    run = Run(resolve(RECIPE, catalog), tmp_path / "run", show_progress=False)
    modality = run.components.modality()
    encoders = run.components.encoders(modality)
    module = run.components.training_module(encoders, run.components.objectives(modality, encoders))
    state = {key: value.clone() + 1 for key, value in module.state_dict().items()}
    module.load_state_dict(state)
    assert all(torch.equal(value, state[key]) for key, value in module.state_dict().items())
