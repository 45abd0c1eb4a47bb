"""Reading numeric tables: CSV files (the ``csv`` module), ``.npy``/``.npz`` arrays, scikit-learn's bundled sets.

Every reader returns a :class:`Table`: float64 features ``[N, D]``, optional labels
(class indices ``[N]`` with their names) and how many rows were skipped.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger("sslhub")

#: scikit-learn data sets shipped inside the package (no download).
BUNDLED = ("digits", "wine", "breast_cancer", "iris")


@dataclass
class Table:
    """Numeric features with optional class labels.

    Attributes:
        features: ``[N, D]`` float64.
        labels: ``[N]`` int64 class indices, or ``None``.
        class_names: name of each class index.
        column_names: name of each feature column.
        skipped_rows: rows dropped while reading (malformed or non-numeric).
        groups: group of each row, from ``group_column`` (rows of one group stay on one side).
    """

    features: np.ndarray
    labels: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)
    column_names: list[str] = field(default_factory=list)
    skipped_rows: int = 0
    #: group name of each row (``group_column``), or ``None``.
    groups: list[str] | None = None


def encode_labels(values: list[str] | np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Class indices ``[N]`` and names for raw label values (sorted numerically when all are numbers)."""
    raw = [str(v).strip() for v in values]
    unique = sorted(set(raw))
    try:
        unique = sorted(unique, key=float)
    except ValueError:
        pass
    index = {name: i for i, name in enumerate(unique)}
    return np.array([index[v] for v in raw], dtype=np.int64), unique


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"non-finite value {text!r}")
    return value


@dataclass(frozen=True)
class _CsvLayout:
    """Where a CSV file's features, label and group sit, by field index."""

    width: int
    feature_names: list[str]
    feature_index: list[int]
    label_index: int | None
    group_index: int | None


def _csv_layout(
    path: Path, header: list[str], label_column: str | None, columns: list[str] | None, group_column: str | None
) -> _CsvLayout:
    """Resolve the named columns against ``header``; a name that is not there is an error naming the file."""
    for option, name in (("label_column", label_column), ("group_column", group_column)):
        if name is not None and name not in header:
            raise ValueError(f"{option} {name!r} is not a column of {path} (columns: {', '.join(header)})")
    wanted = columns if columns is not None else [name for name in header if name not in (label_column, group_column)]
    unknown = [name for name in wanted if name not in header]
    if unknown:
        raise ValueError(f"columns {unknown} are not in {path} (columns: {', '.join(header)})")
    if not wanted:
        raise ValueError(f"{path} has no feature column besides the label {label_column!r}")
    return _CsvLayout(
        width=len(header),
        feature_names=list(wanted),
        feature_index=[header.index(name) for name in wanted],
        label_index=header.index(label_column) if label_column is not None else None,
        group_index=header.index(group_column) if group_column is not None else None,
    )


def _parse_row(row: list[str], layout: _CsvLayout) -> tuple[list[float], str | None, str | None]:
    """One data row's feature values, label and group.

    Raises:
        ValueError: why the row cannot be used (field count, a non-numeric value, an empty label or group).
    """
    if len(row) != layout.width:
        raise ValueError(f"{len(row)} fields, expected {layout.width}")
    values = [_number(row[i]) for i in layout.feature_index]
    label = row[layout.label_index].strip() if layout.label_index is not None else None
    group = row[layout.group_index].strip() if layout.group_index is not None else None
    if label == "":
        raise ValueError("empty label")
    if group == "":
        raise ValueError("empty group")
    return values, label, group


def _read_rows(
    reader: Iterable[list[str]], layout: _CsvLayout
) -> tuple[list[list[float]], list[str], list[str], list[tuple[int, str]]]:
    """``(rows, labels, groups, skipped)`` of the data lines after the header: the feature values, the label
    and group of each usable row (empty lists when the layout has none), and ``(line, why)`` for each
    row :func:`_parse_row` refused. Blank lines are neither."""
    rows: list[list[float]] = []
    labels: list[str] = []
    groups: list[str] = []
    skipped: list[tuple[int, str]] = []
    for line, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        try:
            values, label, group = _parse_row(row, layout)
        except ValueError as error:
            skipped.append((line, str(error)))
            continue
        rows.append(values)
        if label is not None:
            labels.append(label)
        if group is not None:
            groups.append(group)
    return rows, labels, groups, skipped


def read_csv(
    path: Path,
    label_column: str | None = None,
    columns: list[str] | None = None,
    delimiter: str = ",",
    group_column: str | None = None,
) -> Table:
    """Read a CSV file with a header row; rows with a wrong field count, an empty or non-numeric
    feature value, or an empty label or group are skipped and counted (a warning names the first few).

    Args:
        path: the file.
        label_column: header name of the class label column (any text), or ``None``.
        columns: feature columns to use; default every column but the label and the group.
        delimiter: field separator.
        group_column: header name of the column naming each row's group (any text), or ``None``.

    Raises:
        ValueError: missing file, no header, unknown column names, or no valid row.
    """
    if not path.is_file():
        raise ValueError(f"tabular source file {path} does not exist")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{path} is empty; the first row must name the columns")
        layout = _csv_layout(path, [name.strip() for name in header], label_column, columns, group_column)
        rows, labels, groups, skipped = _read_rows(reader, layout)
    if skipped:
        shown = "; ".join(f"line {n}: {why}" for n, why in skipped[:3])
        logger.warning("skipped %d malformed rows of %s (%s)", len(skipped), path, shown)
    if not rows:
        raise ValueError(f"{path} has no valid data row ({len(skipped)} skipped)")
    encoded, names = encode_labels(labels) if layout.label_index is not None else (None, [])
    table_groups = groups if layout.group_index is not None else None
    return Table(np.asarray(rows, dtype=np.float64), encoded, names, layout.feature_names, len(skipped), table_groups)


def read_numpy(
    path: Path, features_key: str = "features", labels_key: str | None = "labels", label_column: int | None = None
) -> Table:
    """Read a 2-D ``.npy`` array, or ``features_key`` (and ``labels_key``, if present) of a ``.npz``.

    Rows holding NaN or infinity are skipped and counted. For ``.npy`` files ``label_column``
    picks a column as the label (removed from the features).

    Raises:
        ValueError: missing file or key, or an array that is not 2-D numeric.
    """
    if not path.is_file():
        raise ValueError(f"tabular source file {path} does not exist")
    features, labels = _load_arrays(path, features_key, labels_key)
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.number):
        raise ValueError(f"{path}: expected a 2-D numeric array [rows, columns], got {features.dtype} {features.shape}")
    if label_column is not None:
        features, labels = _split_label_column(features, label_column)
    if labels is not None and len(labels) != len(features):
        raise ValueError(f"{path}: {len(labels)} labels for {len(features)} rows")
    finite = np.isfinite(features.astype(np.float64)).all(axis=1)
    skipped = int((~finite).sum())
    if skipped:
        logger.warning("skipped %d rows of %s holding NaN or infinity", skipped, path)
    features = features[finite].astype(np.float64)
    encoded, names = (None, [])
    if labels is not None:
        encoded, names = encode_labels(np.asarray(labels)[finite])
    return Table(features, encoded, names, [f"x{i}" for i in range(features.shape[1])], skipped)


def _load_arrays(path: Path, features_key: str, labels_key: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The features array of a ``.npy`` file, or the features (and labels, if present) of a ``.npz``."""
    if path.suffix != ".npz":
        return np.load(path, allow_pickle=False), None
    with np.load(path, allow_pickle=False) as archive:
        if features_key not in archive:
            raise ValueError(f"{path} has no array {features_key!r} (arrays: {', '.join(archive.files)})")
        labels = archive[labels_key] if labels_key is not None and labels_key in archive else None
        return archive[features_key], labels


def _split_label_column(features: np.ndarray, label_column: int) -> tuple[np.ndarray, np.ndarray]:
    if not -features.shape[1] <= label_column < features.shape[1]:
        raise ValueError(f"label_column {label_column} is out of range for {features.shape[1]} columns")
    return np.delete(features, label_column, axis=1), features[:, label_column]


def load_bundled(name: str) -> Table:
    """One of scikit-learn's bundled labeled sets (``digits``: 1797 x 64 pixel intensities,
    10 classes; ``wine``: 178 x 13; ``breast_cancer``: 569 x 30; ``iris``: 150 x 4)."""
    from sklearn import datasets

    loaders = {
        "digits": datasets.load_digits,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "iris": datasets.load_iris,
    }
    if name not in loaders:
        raise ValueError(f"unknown bundled data set {name!r}; choose one of {', '.join(BUNDLED)}")
    bunch = loaders[name]()
    features = np.asarray(bunch.data, dtype=np.float64).reshape(len(bunch.data), -1)
    columns = [str(c) for c in getattr(bunch, "feature_names", [])] or [f"x{i}" for i in range(features.shape[1])]
    return Table(features, np.asarray(bunch.target, dtype=np.int64), [str(n) for n in bunch.target_names], columns, 0)
