"""Evaluation of a run: what is probed on which split, and the ``evaluation.json`` report.

Three candidates are probed on the same labeled split with the same probes (kNN, the full
linear probe, few-shot linear probes): the trained encoder(s), the same encoder(s) at their
random initialisation, and the modality's raw-input features (:meth:`Modality.raw_features`,
which need no learning). The report also holds the objectives' held-out metrics and their
own reports, and a ``verdict`` saying in words whether training beat both baselines. The
probes themselves are in :mod:`sslhub.evaluate`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from sslhub import verdict_words
from sslhub.checkpoint import atomic_write_bytes
from sslhub.components import Batch, EncoderSet, EvalSplit, Modality, Objective
from sslhub.errors import SSLHubError
from sslhub.evaluate import few_shot_accuracy, knn_accuracy, linear_probe_accuracy, too_few_for_shots
from sslhub.recipe import EvaluateSpec

#: what each baseline candidate is called in the verdict.
BASELINE_NAMES = {"random_init": "random init", "raw_input": "the raw-input baseline"}

_FEW_SHOT_KEY = re.compile(r"few_shot_(\d+)_accuracy")

#: turns a labeled batch (after ``on_device``, label removed) into features ``[B, F]`` by score prefix.
Featurizer = Callable[[Batch], dict[str, Tensor] | None]


@dataclass(frozen=True)
class EvaluationSetup:
    """What the evaluation needs from the run besides the components it evaluates.

    Attributes:
        spec: the recipe's ``evaluate`` section.
        seed: the recipe seed (capped subsets, probe initialisation, few-shot draws).
        device: where the encoders run.
        run_dir: where the report (and the objectives' artifacts) are written.
        objective_encoder_keys: per objective, the ``encoders:`` key it trains, or None for all.
        objective_names: per objective, its name in reports (``simclr``; ``simclr1`` for a repeat).
        held_out_batch_size: batch size of the held-out objective metrics.
        build_random_init: rebuilds the encoder(s) at their random initialisation.
        build_objectives: builds fresh objectives (new heads) on the given encoder(s).
    """

    spec: EvaluateSpec
    seed: int
    device: torch.device
    run_dir: Path
    objective_encoder_keys: Sequence[str | None]
    objective_names: Sequence[str]
    held_out_batch_size: int
    build_random_init: Callable[[], EncoderSet]
    build_objectives: Callable[[EncoderSet], list[Objective]]


@dataclass(frozen=True)
class SplitFeatures:
    """Features of both sides of a labeled split, by score prefix (``""`` or ``"image/"``).

    Attributes:
        train, test: ``{prefix: [N, F]}`` float32 on the CPU.
        train_labels, test_labels: ``[N]`` int64.
    """

    train: dict[str, Tensor]
    test: dict[str, Tensor]
    train_labels: Tensor
    test_labels: Tensor


def evaluate_run(
    setup: EvaluationSetup,
    modality: Modality,
    encoder: EncoderSet,
    objectives: list[Objective],
    split: EvalSplit | None = None,
    output_name: str = "evaluation.json",
) -> dict[str, Any]:
    """Evaluate a run's encoder(s) and write the report to ``run_dir / output_name``.

    Args:
        split: the labeled split to probe on; None for the modality's own (:meth:`Modality.eval_split`).

    Returns:
        The report: ``trained``, ``random_init`` and ``raw_input`` scores (with several
        encoders each key is prefixed, ``image/knn_accuracy``), ``eval_split`` sizes,
        ``verdict`` lines, ``notes`` (what was skipped and why) and ``objectives`` reports.
    """
    spec = setup.spec
    if not spec.enabled:
        return {}
    random_encoder = setup.build_random_init() if spec.random_init_baseline else None
    report: dict[str, Any] = {}
    notes: list[str] = []
    split = split if split is not None else modality.eval_split()
    if split is not None and spec.max_samples is not None:
        split = capped_split(split, spec.max_samples, setup.seed)
    if split is not None and (spec.knn or spec.linear_probe or spec.few_shot):
        embeddings: dict[str, Tensor] = {}
        report.update(probe_candidates(setup, modality, encoder, random_encoder, split, notes, embeddings))
        report["eval_split"] = split_summary(split)
        save_embedding_sample(setup, output_name, embeddings, split.class_names)
    held_out, extras = objective_results(setup, modality, encoder, random_encoder, objectives)
    for label, metrics in held_out.items():
        report.setdefault(label, {}).update(metrics)
    report["verdict"] = verdict(report)
    if notes:
        report["notes"] = notes
    if extras:
        report["objectives"] = extras
    atomic_write_bytes(setup.run_dir / output_name, json.dumps(report, indent=2, default=str).encode())
    return report


def probe_candidates(
    setup: EvaluationSetup,
    modality: Modality,
    encoder: EncoderSet,
    random_encoder: EncoderSet | None,
    split: EvalSplit,
    notes: list[str],
    embeddings: dict[str, Tensor] | None = None,
) -> dict[str, dict[str, float]]:
    """Probe scores of the trained encoder(s), the random init (when given) and the raw input (when asked).

    Appends to ``notes`` what was left out: few-shot sizes some class cannot fill, a missing raw baseline.
    When ``embeddings`` is given, it receives each candidate's probe-test features
    (see :func:`embedding_keys`) and their ``labels``.
    """
    candidates: dict[str, tuple[Featurizer, nn.Module | None]] = {"trained": (encoder_featurizer(encoder), encoder)}
    if random_encoder is not None:
        candidates["random_init"] = (encoder_featurizer(random_encoder), random_encoder)
    if setup.spec.raw_baseline:
        candidates["raw_input"] = (raw_featurizer(modality), None)
    results: dict[str, dict[str, float]] = {}
    shots: list[int] | None = None
    for label, (featurize, module) in candidates.items():
        with evaluating(module):
            features = split_features(modality, split, featurize, setup)
        if features is None:
            notes.append(f"no raw-input baseline: the modality {type(modality).__name__} defines no raw_features")
            continue
        if shots is None:
            shots = usable_shots(setup.spec, features, split.class_names, notes)
        if embeddings is not None:
            embeddings.update(embedding_keys(label, features.test))
            embeddings.setdefault("labels", features.test_labels)
        results[label] = {}
        for prefix in features.train:
            scores = probe_scores(setup.spec, features, prefix, shots, setup.seed)
            results[label].update({prefix + key: value for key, value in scores.items()})
    return results


def encoder_featurizer(encoder: EncoderSet) -> Featurizer:
    """Pooled features of each encoder, by report prefix (``""`` for ``encoder:``, ``"KEY/"`` for ``encoders:``)."""
    named = encoder.named()

    def featurize(batch: Batch) -> dict[str, Tensor]:
        return {prefix: single(batch).pooled for prefix, single in named}

    return featurize


def raw_featurizer(modality: Modality) -> Featurizer:
    """The modality's :meth:`Modality.raw_features` by prefix, checked to be float ``[B, F]``."""

    def featurize(batch: Batch) -> dict[str, Tensor] | None:
        raw = modality.raw_features(batch)
        if raw is None:
            return None
        parts = {"": raw} if isinstance(raw, Tensor) else {f"{key}/": value for key, value in raw.items()}
        for prefix, value in parts.items():
            if not _is_feature_matrix(value, _batch_size(batch)):
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise SSLHubError(
                    f"{type(modality).__name__}.raw_features returned {shape} for {prefix or 'the batch'}; "
                    "the contract is float [batch, features] (see Modality.raw_features)"
                )
        return parts

    return featurize


def _is_feature_matrix(value: object, rows: int) -> bool:
    return isinstance(value, Tensor) and value.is_floating_point() and value.dim() == 2 and value.shape[0] == rows


def _batch_size(batch: Batch) -> int:
    return next(iter(v.shape[0] for v in batch.values() if isinstance(v, Tensor)))


def split_features(
    modality: Modality, split: EvalSplit, featurize: Featurizer, setup: EvaluationSetup
) -> SplitFeatures | None:
    """Features of both sides of ``split``; None when ``featurize`` gives none (no raw baseline)."""
    train = collect_features(modality, split.train, featurize, setup.device, setup.spec.batch_size)
    if train is None:
        return None
    test = collect_features(modality, split.test, featurize, setup.device, setup.spec.batch_size)
    assert test is not None
    return SplitFeatures(train=train[0], test=test[0], train_labels=train[1], test_labels=test[1])


@torch.no_grad()
def collect_features(
    modality: Modality, dataset: Dataset, featurize: Featurizer, device: torch.device, batch_size: int
) -> tuple[dict[str, Tensor], Tensor] | None:
    """``({prefix: [N, F]}, labels [N])`` over a labeled dataset; None when ``featurize`` gives None."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=modality.collate)
    parts: dict[str, list[Tensor]] = {}
    labels: list[Tensor] = []
    for batch in loader:
        labels.append(batch.pop("label").long().cpu())
        batch = modality.on_device({k: v.to(device, non_blocking=True) for k, v in batch.items()})
        features = featurize(batch)
        if features is None:
            return None
        for prefix, value in features.items():
            parts.setdefault(prefix, []).append(value.float().cpu())
    return {prefix: torch.cat(values) for prefix, values in parts.items()}, torch.cat(labels)


@contextmanager
def evaluating(module: nn.Module | None) -> Iterator[None]:
    """``module`` (and its children) in eval mode inside the block, in its former mode after it."""
    if module is None:
        yield
        return
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def usable_shots(
    spec: EvaluateSpec, features: SplitFeatures, class_names: Sequence[str], notes: list[str]
) -> list[int]:
    """The few-shot sizes every class can fill from the probe-train side; a note for each one left out."""
    if spec.few_shot is None:
        return []
    usable = []
    for shots in spec.few_shot.shots:
        short = too_few_for_shots(features.train_labels, features.test_labels, shots)
        if short is None:
            usable.append(shots)
            continue
        cls, count = short
        name = class_names[cls] if cls < len(class_names) else str(cls)
        notes.append(f"few-shot probe with {shots} shots skipped: class '{name}' has only {count} probe-train samples")
    return usable


def probe_scores(
    spec: EvaluateSpec, features: SplitFeatures, prefix: str, shots: Sequence[int], seed: int
) -> dict[str, float]:
    """kNN, full linear probe and few-shot scores of one feature set (the probes ``spec`` turns on)."""
    train_x, test_x = features.train[prefix], features.test[prefix]
    train_y, test_y = features.train_labels, features.test_labels
    scores: dict[str, float] = {}
    if spec.knn:
        scores["knn_accuracy"] = round(
            knn_accuracy(train_x, train_y, test_x, test_y, spec.knn.k, spec.knn.temperature), 4
        )
    if spec.linear_probe:
        probe = spec.linear_probe
        accuracy = linear_probe_accuracy(train_x, train_y, test_x, test_y, probe.epochs, probe.weight_decay, seed)
        scores["linear_probe_accuracy"] = round(accuracy, 4)
    if spec.few_shot:
        for count in shots:
            result = few_shot_accuracy(
                train_x,
                train_y,
                test_x,
                test_y,
                count,
                spec.few_shot.draws,
                seed,
                spec.few_shot.epochs,
                spec.few_shot.weight_decay,
            )
            scores[f"few_shot_{count}_accuracy"] = round(result.mean, 4)
            scores[f"few_shot_{count}_std"] = round(result.std, 4)
    return scores


def embedding_keys(candidate: str, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``{"trained": [N, F]}`` for one encoder, ``{"trained:image": ..., "trained:text": ...}`` for several."""
    return {f"{candidate}:{prefix.rstrip('/')}" if prefix else candidate: value for prefix, value in features.items()}


def embedding_sample_file(output_name: str) -> str:
    """``evaluation.json`` -> ``embeddings_sample.npz``; ``evaluation-NAME.json`` -> ``embeddings_sample-NAME.npz``."""
    stem = Path(output_name).stem
    return "embeddings_sample" + stem.removeprefix("evaluation") + ".npz"


def save_embedding_sample(
    setup: EvaluationSetup, output_name: str, embeddings: Mapping[str, Tensor], class_names: Sequence[str]
) -> Path | None:
    """Save a seeded sample of at most ``evaluate.embedding_sample`` probe-test rows for the run report.

    The file (:func:`embedding_sample_file`, compressed ``.npz``, no pickled objects) holds
    ``labels`` int64 ``[N]``, ``class_names`` str ``[C]`` and each candidate's features float16
    ``[N, F]`` under :func:`embedding_keys`, so the report draws its map without torch. An older
    sample is removed when none is saved, so a report never shows another evaluation's map.
    """
    path = setup.run_dir / embedding_sample_file(output_name)
    labels = embeddings.get("labels")
    if setup.spec.embedding_sample == 0 or labels is None or len(embeddings) < 2:
        path.unlink(missing_ok=True)
        return None
    rows = torch.arange(len(labels))
    if len(labels) > setup.spec.embedding_sample:
        generator = torch.Generator().manual_seed(setup.seed + 2)
        rows = torch.randperm(len(labels), generator=generator)[: setup.spec.embedding_sample].sort().values
    arrays: dict[str, np.ndarray] = {"labels": labels[rows].numpy(), "class_names": np.array(list(class_names), str)}
    limit = float(np.finfo(np.float16).max)
    for key, features in embeddings.items():
        if key != "labels":
            arrays[key] = features[rows].float().clamp(-limit, limit).numpy().astype(np.float16)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def capped_split(split: EvalSplit, limit: int, seed: int) -> EvalSplit:
    """``split`` with each side cut to a seeded random ``limit`` samples when larger (same subset every time)."""

    def cap(dataset: Dataset, offset: int) -> Dataset:
        if len(dataset) <= limit:
            return dataset
        chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed + offset))[:limit]
        return Subset(dataset, sorted(chosen.tolist()))

    # replace, not a new EvalSplit: the groups and source of the split stay with it
    return dataclasses.replace(split, train=cap(split.train, 0), test=cap(split.test, 1))


def split_summary(split: EvalSplit) -> dict[str, Any]:
    """``{"train": n, "test": n}`` samples, plus ``groups`` and ``source`` when the split has them."""
    summary: dict[str, Any] = {"train": len(split.train), "test": len(split.test)}
    if split.groups is not None:
        summary["groups"] = dict(split.groups)
    if split.source:
        summary["source"] = split.source
    return summary


def objective_results(
    setup: EvaluationSetup,
    modality: Modality,
    encoder: EncoderSet,
    random_encoder: EncoderSet | None,
    objectives: list[Objective],
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """``({candidate: held-out metrics}, {objective name: its report})``.

    The random-init candidate gets freshly initialised heads: the trained heads on a random
    encoder would measure neither model. They are built only where something uses them. No
    objectives (an encoder evaluated with another read-out than it was trained with): nothing.
    """
    if not objectives:
        return {}, {}
    held_out = modality.held_out_dataset()
    wants_baseline = any(o.report_takes_baseline for o in objectives)
    random_objectives = (
        setup.build_objectives(random_encoder)
        if random_encoder is not None and (held_out is not None or wants_baseline)
        else None
    )
    metrics: dict[str, dict[str, float]] = {}
    if held_out is not None:
        metrics["trained"] = held_out_metrics(setup, modality, encoder, objectives, held_out)
        if random_encoder is not None and random_objectives is not None:
            metrics["random_init"] = held_out_metrics(setup, modality, random_encoder, random_objectives, held_out)
    extras: dict[str, Any] = {}
    for index, objective in enumerate(objectives):
        options: dict[str, Any] = {}
        if objective.report_takes_baseline:
            baseline = None
            if random_objectives is not None and random_encoder is not None:
                baseline = (random_objectives[index], random_encoder.for_objective(setup.objective_encoder_keys[index]))
            options["baseline"] = baseline
        extra = objective.report(
            setup.run_dir, encoder.for_objective(setup.objective_encoder_keys[index]), modality, **options
        )
        if extra:
            extras[setup.objective_names[index]] = extra
    return metrics, extras


@torch.no_grad()
def held_out_metrics(
    setup: EvaluationSetup,
    modality: Modality,
    encoder: EncoderSet,
    objectives: list[Objective],
    dataset: Dataset,
) -> dict[str, float]:
    """Each objective's ``held_out_metrics`` averaged over at most ``max_held_out_batches`` batches."""
    sums, count = held_out_sums(setup, modality, encoder, objectives, dataset)
    return mean_of_sums(sums, count)


def mean_of_sums(sums: Mapping[str, float], count: int) -> dict[str, float]:
    """The per-batch means of :func:`held_out_sums`, rounded as the report shows them."""
    return {key: round(value / max(count, 1), 5) for key, value in sums.items()}


@torch.no_grad()
def held_out_sums(
    setup: EvaluationSetup,
    modality: Modality,
    encoder: EncoderSet,
    objectives: list[Objective],
    dataset: Dataset,
    extra: Callable[[Batch], Mapping[str, float]] | None = None,
) -> tuple[dict[str, float], int]:
    """``({OBJECTIVE/METRIC: sum over batches}, batches)`` of the objectives' ``held_out_metrics``.

    Args:
        extra: more figures of one batch, summed alike (the validation's total loss).
    """
    loader = DataLoader(dataset, batch_size=setup.held_out_batch_size, shuffle=False, collate_fn=modality.collate)
    sums: dict[str, float] = {}
    count = 0
    with evaluating(encoder):
        for index, batch in enumerate(loader):
            if index >= setup.spec.max_held_out_batches:
                break
            batch = modality.on_device({k: v.to(setup.device) for k, v in batch.items()})
            for position, objective in enumerate(objectives):
                own = encoder.for_objective(setup.objective_encoder_keys[position])
                with evaluating(objective):
                    for key, value in objective.held_out_metrics(batch, own).items():
                        name = f"{setup.objective_names[position]}/{key}"
                        sums[name] = sums.get(name, 0.0) + value
            for key, value in (extra(batch) if extra is not None else {}).items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
    return sums, count


def is_probe_score(key: str) -> bool:
    """Whether a report key is a probe accuracy (``knn_accuracy``, ``image/few_shot_5_accuracy``)."""
    name = key.rsplit("/", 1)[-1]
    return name in ("knn_accuracy", "linear_probe_accuracy") or _FEW_SHOT_KEY.fullmatch(name) is not None


def describe_score(key: str) -> str:
    """``image/few_shot_5_accuracy`` -> ``image 5-shot probe``; ``knn_accuracy`` -> ``kNN``."""
    prefix, _, name = key.rpartition("/")
    few_shot = _FEW_SHOT_KEY.fullmatch(name)
    if few_shot:
        label = f"{few_shot.group(1)}-shot probe"
    else:
        label = {"knn_accuracy": "kNN", "linear_probe_accuracy": "full linear probe"}.get(name, name)
    return f"{prefix} {label}" if prefix else label


def baseline_score(baseline: Mapping[str, float], key: str) -> float | None:
    """A baseline's score for ``key``; for an encoder's key (``left/knn_accuracy``) a raw input
    that feeds every encoder alike has it unprefixed (``knn_accuracy``)."""
    return baseline.get(key, baseline.get(key.rsplit("/", 1)[-1]))


def verdict(report: Mapping[str, Any]) -> list[str]:
    """One line per probe score and baseline: whether the trained encoder beats it, with both figures.

    A few-shot gap smaller than the spread of the trained encoder's draws is said to be so.
    """
    trained = report.get("trained", {})
    lines = []
    for label, name in BASELINE_NAMES.items():
        baseline = report.get(label) or {}
        for key, value in trained.items():
            other = baseline_score(baseline, key)
            if not is_probe_score(key) or other is None:
                continue
            beats = "beats" if value > other else verdict_words.LOSS
            line = f"trained {beats} {name} on {describe_score(key)}: {value:.4f} vs {other:.4f}"
            spread = trained.get(key.replace("_accuracy", "_std"), 0.0) if _FEW_SHOT_KEY.search(key) else 0.0
            if 0 < abs(value - other) < spread:
                line += f" ({verdict_words.NARROW}, std {spread:.4f})"
            lines.append(line)
    return lines
