"""The table that tells whether pretraining paid off: test accuracy at several label counts of

- fine-tuning from the pretrained encoder,
- fine-tuning the same architecture from its random initialisation, with the same budget,
- a linear probe on the frozen pretrained features (:func:`sslhub.evaluate.linear_probe_accuracy`),

each on the same seeded draw of labeled samples (``shots`` per class, ``draws`` draws).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import Subset

from sslhub.evaluate import embed_dataset, linear_probe_accuracy
from sslhub.finetune_data import FinetuneData, LabeledSet

if TYPE_CHECKING:
    from sslhub.finetune import FinetuneJob

log = logging.getLogger("sslhub")


@dataclass(frozen=True)
class ProbeOptions:
    """The linear probe's L-BFGS iterations and L2 penalties: with all labels and with few."""

    epochs: int = 100
    weight_decay: float | list[float] = 1e-4
    few_shot_epochs: int = 100
    few_shot_weight_decay: float = 1e-2


def _features(job: FinetuneJob, encoder: Any, labeled: LabeledSet) -> tuple[Tensor, Tensor]:
    subset = Subset(labeled.dataset, labeled.indices.tolist())
    return embed_dataset(encoder, job.modality, subset, job.device, batch_size=job.spec.batch_size * 4)


def probe_accuracy(
    job: FinetuneJob, encoder: Any, data: FinetuneData, test_features: tuple[Tensor, Tensor], seed: int, few: bool
) -> float:
    """A linear probe fitted on every labeled sample of ``data`` (train and validation sides).

    ``few``: a few-shot draw, probed with the few-shot options (a stronger penalty).
    """
    labeled = data.train if data.validation is None else _joined(data.train, data.validation)
    features, labels = _features(job, encoder, labeled)
    probe = job.probe
    epochs = probe.few_shot_epochs if few else probe.epochs
    decay = probe.few_shot_weight_decay if few else probe.weight_decay
    return linear_probe_accuracy(features, labels, *test_features, epochs, decay, seed)


def _joined(a: LabeledSet, b: LabeledSet) -> LabeledSet:
    return LabeledSet(a.dataset, torch.cat([a.indices, b.indices]), torch.cat([a.labels, b.labels]))


def _pretrained(job: FinetuneJob, state: dict[str, Tensor]) -> Any:
    encoder = job.build_encoder()
    encoder.load_state_dict(state)
    return encoder.to(job.device)


def compare_row(
    job: FinetuneJob,
    pretrained: dict[str, Tensor],
    sides: tuple[LabeledSet, LabeledSet, list[str]],
    shots: int | None,
    main_row: dict[str, Any],
    test_features: tuple[Tensor, Tensor],
) -> dict[str, Any]:
    """One row of the table: each candidate's test accuracy, mean and std over the draws."""
    from sslhub.finetune import fine_tune, prepare_data

    train, test, class_names = sides
    scores: dict[str, list[float]] = {"pretrained": [], "random_init": [], "linear_probe": []}
    for draw in range(job.spec.compare.draws):  # type: ignore[union-attr]
        seed = job.seed + draw
        data = prepare_data(train, test, class_names, job.spec, shots, seed)
        if draw == 0 and shots == main_row["shots"]:
            scores["pretrained"].append(main_row["test_accuracy"])  # the same fine-tune as the main one
        else:
            scores["pretrained"].append(fine_tune(_pretrained(job, pretrained), data, job, seed)[2]["accuracy"])
        if job.spec.compare.random_init:  # type: ignore[union-attr]
            scores["random_init"].append(fine_tune(job.build_encoder(), data, job, seed)[2]["accuracy"])
        if job.spec.compare.linear_probe:  # type: ignore[union-attr]
            encoder = _pretrained(job, pretrained)
            scores["linear_probe"].append(probe_accuracy(job, encoder, data, test_features, seed, shots is not None))
    row: dict[str, Any] = {"shots": shots, "train": len(data.train), "validation": len(data.validation or ())}
    for name, values in scores.items():
        if values:
            spread = torch.tensor(values, dtype=torch.float64)
            row[name] = spread.mean().item()
            row[f"{name}_std"] = spread.std().item() if len(values) > 1 else 0.0
    return row


def compare(
    job: FinetuneJob,
    pretrained: dict[str, Tensor],
    train: LabeledSet,
    test: LabeledSet,
    class_names: list[str],
    main_row: dict[str, Any],
) -> dict[str, Any]:
    """The comparison table of ``finetune.json`` (``rows``, one per ``compare.shots``)."""
    spec = job.spec.compare
    assert spec is not None
    test_features = _features(job, _pretrained(job, pretrained), test) if spec.linear_probe else None
    rows = []
    for shots in spec.shots:
        log.info("comparison: %s labeled samples per class", "all" if shots is None else shots)
        rows.append(compare_row(job, pretrained, (train, test, class_names), shots, main_row, test_features))
    fewest = int(torch.unique(train.labels, return_counts=True)[1].min())  # of the classes it has
    notes = [
        f"{shots} per class asked, but a class has only {fewest} labeled training samples: it gives them all"
        for shots in spec.shots
        if shots is not None and shots > fewest
    ]
    return {"test_samples": len(test), "draws": spec.draws, "rows": rows, "notes": notes}


COLUMNS = {"pretrained": "pretrained", "random_init": "random init", "linear_probe": "linear probe"}


def format_comparison(comparison: dict[str, Any]) -> list[str]:
    """The table as text lines: one row per label count, ``mean±std`` with several draws."""
    rows = comparison["rows"]
    columns = [key for key in COLUMNS if any(key in row for row in rows)]
    lines = [
        f"test accuracy on {comparison['test_samples']} samples: fine-tuned from the pretrained encoder, "
        "fine-tuned from random init (same budget), linear probe of the frozen pretrained features",
        f"{'labels per class':<18}" + "".join(f" {COLUMNS[key]:>16}" for key in columns),
    ]
    for row in rows:
        cells = []
        for key in columns:
            if key not in row:
                cells.append("-")
            elif comparison["draws"] > 1:
                cells.append(f"{row[key]:.4f}±{row[f'{key}_std']:.4f}")
            else:
                cells.append(f"{row[key]:.4f}")
        shots = "all" if row["shots"] is None else str(row["shots"])
        lines.append(f"{shots:<18}" + "".join(f" {cell:>16}" for cell in cells))
    verdict = [
        f"pretraining {'helps' if row['pretrained'] > row['random_init'] else 'does NOT help'} at "
        f"{'all' if row['shots'] is None else row['shots']} labels per class"
        for row in rows
        if "random_init" in row
    ]
    return lines + verdict + [f"note: {note}" for note in comparison.get("notes", [])]
