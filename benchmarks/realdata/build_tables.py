"""The Wisconsin breast-cancer diagnostic table that ships inside scikit-learn (569 rows).

Thirty numeric measurements of cell nuclei per row, labeled malignant or benign. The table has
no natural groups (one row per patient, no patient or site column), so the pretrain / labeled
sides are a stratified random split of rows, and so is the evaluation's probe split. Written as
``pretrain.csv`` and ``labeled.csv`` with the label in the ``diagnosis`` column.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

LABEL_COLUMN = "diagnosis"


def stratified_sides(labels: np.ndarray, labeled_fraction: float, seed: int) -> np.ndarray:
    """A boolean mask ``[N]``: True for rows on the labeled side, the fraction kept per class."""
    rng = np.random.default_rng(seed)
    labeled = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        labeled[members[: round(len(members) * labeled_fraction)]] = True
    return labeled


def write_csv(path: Path, header: list[str], features: np.ndarray, labels: list[str]) -> None:
    """A header row, then one row per sample: the features (repr-exact floats), then the label."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*header, LABEL_COLUMN])
        for row, label in zip(features, labels, strict=True):
            writer.writerow([*(repr(float(v)) for v in row), label])


def build_tables(out: Path, labeled_fraction: float, seed: int) -> dict:
    """Write ``pretrain.csv`` and ``labeled.csv`` under ``out`` and return the manifest entry."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    header = [name.replace(" ", "_") for name in data.feature_names]
    names = [str(data.target_names[t]) for t in data.target]
    on_labeled = stratified_sides(data.target, labeled_fraction, seed)
    out.mkdir(parents=True, exist_ok=True)
    sides = {}
    for side, mask in (("pretrain", ~on_labeled), ("labeled", on_labeled)):
        rows = np.flatnonzero(mask)
        write_csv(out / f"{side}.csv", header, data.data[rows], [names[i] for i in rows])
        per_class = {c: int(sum(names[i] == c for i in rows)) for c in sorted(set(names))}
        sides[side] = {"samples": int(len(rows)), "groups": None, "per_class": per_class}
    return {
        "classes": sorted(set(names)),
        "group": None,
        "layout": f"pretrain.csv / labeled.csv, label column {LABEL_COLUMN!r}, 30 numeric columns",
        "label_column": LABEL_COLUMN,
        "note": "no natural groups: the sides and the probe split are stratified random splits of rows",
        "sides": sides,
    }
