"""Real labeled tables that ship inside scikit-learn (no download), one set per table.

- ``tabular``: the Wisconsin breast-cancer diagnostic table (569 rows, 30 numeric measurements
  of cell nuclei, labeled malignant or benign). Near linearly separable: little headroom.
- ``tabular_diabetes``: the diabetes table of Efron et al. (2004) (442 patients, 10 baseline
  measurements: age, sex, body-mass index, blood pressure and six blood serum values, in their
  original units). Its target, disease progression one year after baseline, is a number; the
  label is its tertile (``low`` / ``middle`` / ``high``, cut points over all 442 rows), a
  3-class task whose raw columns leave room to improve on.

Neither table has natural groups (one row per patient, no patient or site column), so the
pretrain / labeled sides are a stratified random split of rows, and so is the evaluation's probe
split. Written as ``pretrain.csv`` and ``labeled.csv``; the label column is ``diagnosis``
(breast cancer) or ``progression`` (diabetes), named in the manifest entry's ``label_column``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: label column of the breast-cancer set (each table names its own in ``RawTable.label_column``).
LABEL_COLUMN = "diagnosis"

#: tertile names of the diabetes table's progression target, lowest first.
TERTILES = ("low", "middle", "high")


@dataclass
class RawTable:
    """One table before the split.

    Attributes:
        features: ``[N, D]`` float64.
        header: name of each column.
        classes: ``[N]`` int class of each row (the stratification key, in the source's own order).
        labels: label name of each row.
        note: what the columns and the label are, for the manifest.
        label_column: header of the label column in the written CSV files.
    """

    features: np.ndarray
    header: list[str]
    classes: np.ndarray
    labels: list[str]
    note: str
    label_column: str = LABEL_COLUMN


def breast_cancer() -> RawTable:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    header = [name.replace(" ", "_") for name in data.feature_names]
    names = [str(data.target_names[t]) for t in data.target]
    return RawTable(data.data, header, data.target, names, "30 numeric columns")


def diabetes() -> RawTable:
    from sklearn.datasets import load_diabetes

    data = load_diabetes(scaled=False)
    cuts = np.quantile(data.target, [1 / 3, 2 / 3])
    tertile = np.digitize(data.target, cuts)
    names = [TERTILES[int(i)] for i in tertile]
    note = "10 numeric columns in original units; label: tertile of disease progression after one year"
    features = np.asarray(data.data, dtype=np.float64)
    return RawTable(features, list(data.feature_names), tertile, names, note, "progression")


#: set name (its folder under the suite's output) -> the table it holds.
TABLES = {"tabular": breast_cancer, "tabular_diabetes": diabetes}


def stratified_sides(labels: np.ndarray, labeled_fraction: float, seed: int) -> np.ndarray:
    """A boolean mask ``[N]``: True for rows on the labeled side, the fraction kept per class."""
    rng = np.random.default_rng(seed)
    labeled = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        labeled[members[: round(len(members) * labeled_fraction)]] = True
    return labeled


def write_csv(
    path: Path, header: list[str], features: np.ndarray, labels: list[str], label_column: str = LABEL_COLUMN
) -> None:
    """A header row, then one row per sample: the features (repr-exact floats), then the label."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*header, label_column])
        for row, label in zip(features, labels, strict=True):
            writer.writerow([*(repr(float(v)) for v in row), label])


def build_tables(out: Path, labeled_fraction: float, seed: int, table: str = "tabular") -> dict:
    """Write the ``table`` set's ``pretrain.csv`` and ``labeled.csv`` under ``out``; return its manifest entry.

    Raises:
        ValueError: ``table`` is not a key of :data:`TABLES`.
    """
    if table not in TABLES:
        raise ValueError(f"unknown table set {table!r}; choose one of {', '.join(TABLES)}")
    raw = TABLES[table]()
    names = raw.labels
    on_labeled = stratified_sides(raw.classes, labeled_fraction, seed)
    out.mkdir(parents=True, exist_ok=True)
    sides = {}
    for side, mask in (("pretrain", ~on_labeled), ("labeled", on_labeled)):
        rows = np.flatnonzero(mask)
        write_csv(out / f"{side}.csv", raw.header, raw.features[rows], [names[i] for i in rows], raw.label_column)
        per_class = {c: int(sum(names[i] == c for i in rows)) for c in sorted(set(names))}
        sides[side] = {"samples": int(len(rows)), "groups": None, "per_class": per_class}
    return {
        "modality": "tabular",
        "classes": sorted(set(names)),
        "group": None,
        "layout": f"pretrain.csv / labeled.csv, label column {raw.label_column!r}, {raw.note}",
        "label_column": raw.label_column,
        "note": "no natural groups: the sides and the probe split are stratified random splits of rows",
        "sides": sides,
    }
