"""Real labeled tables, one set per table: two that ship inside scikit-learn, one from files you supply.

- ``tabular``: the Wisconsin breast-cancer diagnostic table (569 rows, 30 numeric measurements
  of cell nuclei, labeled malignant or benign). Near linearly separable: little headroom.
- ``tabular_diabetes``: the diabetes table of Efron et al. (2004) (442 patients, 10 baseline
  measurements: age, sex, body-mass index, blood pressure and six blood serum values, in their
  original units). Its target, disease progression one year after baseline, is a number; the
  label is its tertile (``low`` / ``middle`` / ``high``, cut points over all 442 rows), a
  3-class task whose raw columns leave room to improve on.
- ``tabular_pendigits``: UCI's pen-based handwritten digits (Alpaydin and Alimoglu, 1998): each
  digit, written on a tablet, is 8 points resampled along the pen's path, 16 coordinates
  scaled to 0..100, labeled by the digit. Not on this machine: ``--pendigits DIR`` names a
  folder holding UCI's ``pendigits.tra`` and ``pendigits.tes``. The two files come from
  different writers (30 and 14), so the pretrain side is the first file and the labeled side
  the second: the probe scores writers the encoder never saw. Unlike the two bundled tables it
  has headroom where few-shot probes need it (raw columns about 0.80 at 5 shots, 0.96 with
  every label).

The bundled tables have no natural groups (one row per patient, no patient or site column), so the
pretrain / labeled sides are a stratified random split of rows, and so is the evaluation's probe
split. Within the pendigits labeled side the writers are not marked, so its probe split is
random rows too. Written as ``pretrain.csv`` and ``labeled.csv``; the label column is
``diagnosis`` (breast cancer), ``progression`` (diabetes) or ``digit`` (pendigits), named in the
manifest entry's ``label_column``.
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

#: UCI's pendigits files: the pretrain side (30 writers), then the labeled side (14 other writers).
PENDIGITS_FILES = ("pendigits.tra", "pendigits.tes")


class MissingTableFiles(FileNotFoundError):
    """A table set built from files the user supplies, without them."""


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
        labeled: ``[N]`` bool, True for rows of the labeled side where the source fixes the sides
            (different writers); None for a stratified random split.
        groups: per side, how many groups it holds (None: the source has no groups).
    """

    features: np.ndarray
    header: list[str]
    classes: np.ndarray
    labels: list[str]
    note: str
    label_column: str = LABEL_COLUMN
    labeled: np.ndarray | None = None
    groups: dict[str, int] | None = None


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


def read_pendigits_file(path: Path) -> np.ndarray:
    """``[N, 17]`` int rows of one pendigits file (16 coordinates, then the digit)."""
    try:
        rows = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as error:
        raise MissingTableFiles(f"{path}: not a pendigits file (17 comma-separated integers a line): {error}") from None
    if rows.shape[1] != 17:
        raise MissingTableFiles(f"{path}: {rows.shape[1]} values a line, pendigits files have 17")
    return rows


def pendigits(folder: Path | None) -> RawTable:
    """The pendigits table from ``folder`` (UCI's two files), sides fixed by writer."""
    wanted = ", ".join(PENDIGITS_FILES)
    if folder is None:
        raise MissingTableFiles(f"tabular_pendigits needs --pendigits DIR, a folder holding UCI's {wanted}")
    missing = [name for name in PENDIGITS_FILES if not (folder / name).is_file()]
    if missing:
        raise MissingTableFiles(
            f"{folder}: no {', '.join(missing)} (UCI's 'Pen-Based Recognition of Handwritten Digits' files)"
        )
    pretrain, labeled = (read_pendigits_file(folder / name) for name in PENDIGITS_FILES)
    rows = np.concatenate([pretrain, labeled])
    header = [f"{axis}{point}" for point in range(1, 9) for axis in "xy"]
    on_labeled = np.arange(len(rows)) >= len(pretrain)
    note = "16 pen coordinates (8 points resampled along the stroke, x and y, 0..100)"
    return RawTable(
        rows[:, :16].astype(np.float64),
        header,
        rows[:, 16],
        [str(d) for d in rows[:, 16]],
        note,
        "digit",
        labeled=on_labeled,
        groups={"pretrain": 30, "labeled": 14},
    )


#: set name (its folder under the suite's output) -> the scikit-learn table it holds.
BUNDLED_TABLES = {"tabular": breast_cancer, "tabular_diabetes": diabetes}
#: set name -> the table it reads from the folder the user names (``build.py --pendigits DIR``).
FILE_TABLES = {"tabular_pendigits": pendigits}
TABLES = (*BUNDLED_TABLES, *FILE_TABLES)


#: how a table's sides and probe split were made, by whether the source fixes the sides.
SPLIT_NOTES = {
    False: "no natural groups: the sides and the probe split are stratified random splits of rows",
    True: "sides by writer (the labeled side's writers are unseen in pretraining); probe split: random rows",
}


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


def load_table(table: str, files: Path | None) -> RawTable:
    """The ``table`` set's rows: a bundled table, or one read from ``files``.

    Raises:
        ValueError: ``table`` is not one of :data:`TABLES`.
        MissingTableFiles: a file table without its files.
    """
    if table in BUNDLED_TABLES:
        return BUNDLED_TABLES[table]()
    if table in FILE_TABLES:
        return FILE_TABLES[table](files)
    raise ValueError(f"unknown table set {table!r}; choose one of {', '.join(TABLES)}")


def build_tables(
    out: Path, labeled_fraction: float, seed: int, table: str = "tabular", files: Path | None = None
) -> dict:
    """Write the ``table`` set's ``pretrain.csv`` and ``labeled.csv`` under ``out``; return its manifest entry.

    ``labeled_fraction`` and ``seed`` split a table whose source does not fix its sides; ``files``
    is the folder a file table (:data:`FILE_TABLES`) reads.
    """
    raw = load_table(table, files)
    names = raw.labels
    on_labeled = raw.labeled if raw.labeled is not None else stratified_sides(raw.classes, labeled_fraction, seed)
    out.mkdir(parents=True, exist_ok=True)
    sides = {}
    for side, mask in (("pretrain", ~on_labeled), ("labeled", on_labeled)):
        rows = np.flatnonzero(mask)
        write_csv(out / f"{side}.csv", raw.header, raw.features[rows], [names[i] for i in rows], raw.label_column)
        per_class = {c: int(sum(names[i] == c for i in rows)) for c in sorted(set(names))}
        groups = None if raw.groups is None else raw.groups[side]
        sides[side] = {"samples": int(len(rows)), "groups": groups, "per_class": per_class}
    return {
        "modality": "tabular",
        "classes": sorted(set(names)),
        "group": None,
        "layout": f"pretrain.csv / labeled.csv, label column {raw.label_column!r}, {raw.note}",
        "label_column": raw.label_column,
        "note": SPLIT_NOTES[raw.labeled is not None],
        "sides": sides,
    }
