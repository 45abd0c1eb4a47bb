"""Helpers for plugin authors' tests: isolated catalogs, short CPU runs, contract checks.

Example::

    from sslhub.testing import build_components, catalog_with, check_objective_learns

    def test_my_objective_learns():
        catalog = catalog_with("sslhub_vision.plugin", "my_plugin.plugin")
        modality, encoder, objective, augmentations = build_components(
            catalog, modality="image", encoder="small_cnn", objective="vicreg",
            augment=["random_resized_crop"], params={"image": {"image_size": 16}},
        )
        dataset = modality.train_dataset()
        batch = modality.on_device(modality.collate([dataset[i] for i in range(16)]))
        check_objective_learns(objective, encoder, [batch], augmentations, steps=20)

    def test_my_recipe_trains():
        summary = run_recipe_for_steps("recipes/my.yaml", 5, overrides={"objectives.0.temperature": 0.5})
        assert summary["losses"][-1] < summary["losses"][0]
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from sslhub.catalog import Catalog
from sslhub.components import Augmentation, Batch, BuildContext, Encoder, EncoderSet, Modality, Objective
from sslhub.engine import Run
from sslhub.recipe import resolve_recipe
from sslhub.recipe_yaml import RecipeSource, apply_override, load_recipe_file, load_recipe_text


def catalog_with(*plugins: str | object, entry_points: bool = False) -> Catalog:
    """A catalog holding only the given plugins (module names or module objects)."""
    names = [p for p in plugins if isinstance(p, str)]
    objects = [p for p in plugins if not isinstance(p, str)]
    catalog = Catalog.load(names, entry_points=entry_points, python_registrations=False, strict=True)
    if objects:
        extra = Catalog.from_modules(*objects)
        for kind, registry in extra.registries.items():
            for component in registry:
                catalog.registry(kind).register(
                    component.name,
                    component.factory,
                    params=component.params,
                    modalities=component.modalities,
                    requires=component.requires,
                    provides=component.provides,
                    encoders=component.encoder_slots,
                    description=component.description,
                    provider=component.provider,
                )
        catalog.plugins.extend(extra.plugins)
    return catalog


def run_recipe_for_steps(
    recipe: str | Path | Mapping[str, Any],
    steps: int,
    *,
    catalog: Catalog | None = None,
    out: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    evaluate: bool = False,
) -> dict[str, Any]:
    """Train a recipe (a path or a dict) for ``steps`` steps on the CPU; returns the run summary
    with ``losses`` (the loss of every step) added.

    Args:
        overrides: ``{"a.b.c": value}`` applied like ``--set a.b.c=value`` (list items by index,
            ``objectives.0.temperature``; an unknown path is a :class:`sslhub.errors.RecipeError`).
    """
    if isinstance(recipe, Mapping):
        source: RecipeSource = load_recipe_text(yaml.safe_dump(dict(recipe)), "<recipe>")
    else:
        source = load_recipe_file(recipe)
    train = source.data.setdefault("train", {})
    train.update({"steps": steps, "device": "cpu", "log_every": 1, "checkpoint_every": max(steps, 1)})
    train.pop("epochs", None)
    if not evaluate:
        source.data["evaluate"] = {"enabled": False}
    source.data["export"] = None
    for key, value in (overrides or {}).items():
        # The same path syntax and checks as --set (list items by index: objectives.0.temperature).
        apply_override(source, f"{key}={json.dumps(value)}")
    resolved = resolve_recipe(source, catalog or Catalog.load())
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = out or Path(tmp) / "run"
        summary = Run(resolved, run_dir, show_progress=False).execute()
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        summary["losses"] = [record["loss"] for record in records if "loss" in record]  # not validation rows
    return summary


def build_components(
    catalog: Catalog,
    *,
    modality: str,
    encoder: str | Mapping[str, str],
    objective: str | None = None,
    augment: Sequence[str] = (),
    params: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
) -> tuple[Modality, Encoder | EncoderSet, Objective | None, list[Augmentation]]:
    """Build components by name with default (or given) parameters, the way the engine does.

    ``encoder`` is one encoder name, or ``{key: name}`` for an :class:`EncoderSet`
    (objectives that use several encoders, such as ``clip``).
    """
    params = params or {}

    def make(kind: str, name: str, context: BuildContext) -> Any:
        component = catalog.registry(kind).get(name)
        return component.factory(component.params.model_validate(dict(params.get(name, {}))), context)

    torch.manual_seed(seed)
    context = BuildContext(modality_name=modality, seed=seed, catalog=catalog)
    built_modality = make("modality", modality, context)
    built_modality.prepare(None)
    context.modality = built_modality
    if isinstance(encoder, Mapping):
        built_encoder = EncoderSet({key: make("encoder", name, context) for key, name in encoder.items()})
    else:
        built_encoder = make("encoder", encoder, context)
    context.encoder = built_encoder
    built_objective = make("objective", objective, context) if objective else None
    if built_objective is not None:
        built_objective.prepare(built_modality, built_encoder)
    augmentations = [make("augmentation", name, context) for name in augment]
    return built_modality, built_encoder, built_objective, augmentations


def check_encoder(encoder: Encoder, batch: Batch) -> None:
    """The encoder returns what it says it provides, with the declared feature size."""
    output = encoder(batch)
    size = next(iter(batch.values())).shape[0]
    assert output.pooled.shape == (size, encoder.feature_dim), (
        f"pooled has shape {tuple(output.pooled.shape)}, expected ({size}, {encoder.feature_dim})"
    )
    for feature in ("tokens", "spatial"):
        present = getattr(output, feature) is not None
        assert present == (feature in encoder.provides), (
            f"encoder provides={sorted(encoder.provides)} but {feature} is {'set' if present else 'None'}"
        )
    for name in encoder.input_names:
        assert name in batch, f"encoder input {name!r} is not in the modality's batch ({sorted(batch)})"


def check_augmentation(augmentation: Augmentation, batch: Batch) -> None:
    """The augmentation keeps every tensor's shape and dtype and does not modify its input."""
    before = {k: v.clone() for k, v in batch.items()}
    output = augmentation(dict(batch))
    for key, value in batch.items():
        assert key in output, f"augmentation dropped {key!r}"
        assert output[key].shape == value.shape, f"{key}: shape {tuple(output[key].shape)} != {tuple(value.shape)}"
        assert output[key].dtype == value.dtype, f"{key}: dtype {output[key].dtype} != {value.dtype}"
        assert torch.equal(value, before[key]), f"augmentation modified its input tensor {key!r} in place"


def check_objective_learns(
    objective: Objective,
    encoder: Encoder,
    batches: Sequence[Batch],
    augmentations: Sequence[Augmentation] = (),
    steps: int = 30,
    lr: float = 1e-3,
    min_drop: float = 0.05,
) -> list[float]:
    """Optimise encoder + objective on ``batches`` (cycled): the loss must be finite, reach every
    trainable parameter with a gradient somewhere, and fall by ``min_drop`` (relative)."""
    # A set is deduplicated: tied weights (an LM head sharing the embeddings) appear once.
    parameters = list({id(p): p for p in [*encoder.parameters(), *objective.parameters()] if p.requires_grad}.values())
    optimizer = torch.optim.Adam(parameters, lr=lr)
    losses = []
    for step in range(steps):
        batch = batches[step % len(batches)]
        views = []
        for _ in range(objective.num_views):
            view = dict(batch)
            for augmentation in augmentations:
                view = augmentation(view)
            views.append(view)
        loss = objective(views, encoder).loss
        assert torch.isfinite(loss), f"loss is not finite at step {step}: {loss.item()}"
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters()), (
                "no gradient reaches the encoder"
            )
        optimizer.step()
        losses.append(loss.item())
    window = max(1, steps // 5)
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    assert last < first * (1 - min_drop), f"loss did not fall: first {first:.4f}, last {last:.4f}"
    return losses


def check_raw_features(modality: Modality, max_samples: int = 200, batch_size: int = 32) -> dict[str, float]:
    """A modality's ``raw_features`` keep their contract; returns their kNN accuracy on its own split.

    Checked on at most ``max_samples`` per side of ``modality.eval_split()``: float ``[B, F]``
    per part, finite, the same on a second pass, and the same for a sample alone as inside a
    batch (a function of each sample, nothing fitted on the batch).

    Returns:
        ``{prefix: accuracy}`` of a 10-nearest-neighbour probe (``""`` for one part, ``"KEY/"``
        for each part of a composite modality), to compare with chance.
    """
    from torch.utils.data import Subset

    from sslhub.evaluate import knn_accuracy
    from sslhub.evaluation import capped_split, collect_features, raw_featurizer

    split = modality.eval_split()
    assert split is not None, f"{type(modality).__name__} has no labeled eval split to check raw_features on"
    split = capped_split(split, max_samples, seed=0)
    featurize, cpu = raw_featurizer(modality), torch.device("cpu")
    train = collect_features(modality, split.train, featurize, cpu, batch_size)
    assert train is not None, f"{type(modality).__name__}.raw_features returned None"
    again = collect_features(modality, split.train, featurize, cpu, batch_size)
    alone = collect_features(modality, Subset(split.train, [0, 1, 2]), featurize, cpu, 1)
    test = collect_features(modality, split.test, featurize, cpu, batch_size)
    assert again is not None and alone is not None and test is not None
    scores = {}
    for prefix, features in train[0].items():
        assert torch.isfinite(features).all(), f"{prefix}raw features are not finite"
        assert torch.equal(features, again[0][prefix]), f"{prefix}raw features differ between two passes"
        assert torch.allclose(alone[0][prefix], features[:3], atol=1e-5), (
            f"{prefix}raw features of a sample depend on the rest of its batch"
        )
        scores[prefix] = knn_accuracy(features, train[1], test[0][prefix], test[1], k=10)
    return scores
