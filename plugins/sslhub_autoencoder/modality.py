"""The ``tabular`` modality: rows of numeric columns as standardised float vectors.

Sources: a CSV file (header row; ``label_column`` optional), a ``.npy``/``.npz`` array, or
(default) one of scikit-learn's bundled labeled sets -- ``digits`` (1797 rows of 64 pixel
intensities, 10 classes) unless ``name`` says otherwise; nothing is downloaded.

The rows are split once, deterministically (``split_seed``, stratified by label when there
are labels): the training part feeds training and the eval split's train side, the
``eval_fraction`` held out is the eval test split and the held-out set. Each column is
standardised with the mean and standard deviation of the **training** part only (columns
constant there get std 1), so no test statistics leak into training.

Samples:
    ``{"vector": float32 [D]}`` standardised, plus ``"label"`` (int64 scalar) on the eval split.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor
from torch.utils.data import Dataset

from sslhub import (
    Batch,
    BuildContext,
    EvalSplit,
    Modality,
    ModalityInfo,
    Params,
    group_split,
    path_problems,
    split_problem,
)
from sslhub_autoencoder.tables import Table, load_bundled, read_csv, read_numpy


class BundledTableSource(Params):
    """A labeled data set bundled with scikit-learn (no download)."""

    type: Literal["default"] = "default"
    name: Literal["digits", "wine", "breast_cancer", "iris"] = Field(
        "digits", description="digits (1797x64, 10 classes) | wine (178x13) | breast_cancer (569x30) | iris (150x4)"
    )


class CsvTableSource(Params):
    """A CSV file whose first row names the columns."""

    type: Literal["csv"] = "csv"
    path: Path = Field(description="the CSV file")
    label_column: str | None = Field(None, description="column holding class labels (for evaluation), if any")
    columns: list[str] | None = Field(None, description="feature columns; default every column but the label")
    delimiter: str = Field(",", min_length=1, max_length=1, description="field separator")
    group_column: str | None = Field(
        None,
        description="column naming each row's group (a patient, a site): the labeled split keeps groups apart, "
        "test groups unseen; needs label_column",
    )

    @model_validator(mode="after")
    def _groups_need_labels(self) -> CsvTableSource:
        if self.group_column is not None and self.label_column is None:
            raise ValueError("group_column groups the labeled split, so it needs label_column too")
        return self

    def file_problems(
        self, test_fraction: float | None = None, seed: int = 0, min_train_per_class: int = 1
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """A missing or empty file, a group column missing from it, or a split without probe-train samples of a class."""
        missing = path_problems(self.path, "file")
        if missing or self.group_column is None or test_fraction is None:
            return missing
        try:
            table = read_csv(self.path.expanduser(), self.label_column, self.columns, self.delimiter, self.group_column)
            split_table(table, test_fraction, seed, min_train_per_class)
        except ValueError as error:
            return [(("group_column",), str(error))]
        return []


class NumpyTableSource(Params):
    """A 2-D ``.npy`` array, or arrays in an ``.npz`` file."""

    type: Literal["numpy"] = "numpy"
    path: Path = Field(description="the .npy or .npz file")
    features_key: str = Field("features", description=".npz: name of the [rows, columns] array")
    labels_key: str | None = Field("labels", description=".npz: name of the label array, used if present")
    label_column: int | None = Field(None, description=".npy: index of the column holding labels, if any")

    def file_problems(
        self, test_fraction: float | None = None, seed: int = 0, min_train_per_class: int = 1
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """A missing or empty file."""
        return path_problems(self.path, "file")


TableSource = Annotated[BundledTableSource | CsvTableSource | NumpyTableSource, Field(discriminator="type")]


class TabularParams(Params):
    """Parameters of the ``tabular`` modality (the recipe's ``data:`` section)."""

    source: TableSource = Field(
        default_factory=BundledTableSource, description="where rows come from: type default | csv | numpy"
    )
    standardize: bool = Field(True, description="standardise columns with the training part's mean and std")
    eval_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of rows held out (eval test / held-out set)")
    split_seed: int = Field(0, description="seed of the deterministic train / held-out split")

    def file_problems(
        self, test_fraction: float | None = None, seed: int = 0, min_train_per_class: int = 1
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """The source's problems with this recipe's ``eval_fraction`` and ``split_seed``."""
        problems = self.source.file_problems(self.eval_fraction, self.split_seed, min_train_per_class)
        return [(("source", *path), message) for path, message in problems]


class VectorDataset(Dataset):
    """Rows of a float32 array as ``{"vector": [D]}`` (and ``"label"`` when labels are given)."""

    def __init__(self, vectors: np.ndarray, labels: np.ndarray | None = None):
        self.vectors = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        self.labels = torch.from_numpy(labels.astype(np.int64)) if labels is not None else None

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        sample = {"vector": self.vectors[index]}
        if self.labels is not None:
            sample["label"] = self.labels[index]
        return sample


def split_table(
    table: Table, test_fraction: float, seed: int, min_train_per_class: int = 1
) -> tuple[np.ndarray, np.ndarray, dict[str, int] | None]:
    """Labeled train / test rows of ``table``: whole groups per side when it has groups, else stratified.

    Raises:
        ValueError: the table has no labels, or the grouped split leaves a class without train rows.
    """
    if table.labels is None:
        raise ValueError("the table has no label column, so it has no labeled split")
    labels = table.labels.tolist()
    split = group_split(labels, table.groups, test_fraction, seed)
    problem = split_problem(labels, split, table.class_names, min_train_per_class)
    if problem is not None:
        raise ValueError(problem)
    groups = split.group_counts() if table.groups is not None else None
    return np.asarray(split.train, dtype=np.int64), np.asarray(split.test, dtype=np.int64), groups


def split_rows(count: int, labels: np.ndarray | None, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train / held-out row indices, stratified by label where every class has 2+ rows."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(count)
    if count < 2:
        return indices, indices[:0]
    stratify = None
    if labels is not None and np.bincount(labels).min(initial=0) >= 2:
        held = max(1, round(count * fraction))
        if held >= len(np.unique(labels)) and count - held >= len(np.unique(labels)):
            stratify = labels
    train, test = train_test_split(indices, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(test)


class TabularModality(Modality):
    """Numeric tables as standardised ``vector`` batches ``[B, D]``."""

    input_names = ("vector",)

    def __init__(self, params: TabularParams | None = None, context: BuildContext | None = None):
        self.params = params or TabularParams()

    @cached_property
    def table(self) -> Table:
        """The source, read once (skipped rows counted in ``table.skipped_rows``)."""
        source = self.params.source
        if isinstance(source, CsvTableSource):
            return read_csv(
                source.path.expanduser(), source.label_column, source.columns, source.delimiter, source.group_column
            )
        if isinstance(source, NumpyTableSource):
            return read_numpy(source.path.expanduser(), source.features_key, source.labels_key, source.label_column)
        return load_bundled(source.name)

    @property
    def skipped_rows(self) -> int:
        """Malformed rows dropped while reading."""
        return self.table.skipped_rows

    @cached_property
    def _splits(self) -> tuple[np.ndarray, np.ndarray]:
        table = self.table
        if table.groups is not None:
            return split_table(table, self.params.eval_fraction, self.params.split_seed)[:2]
        return split_rows(len(table.features), table.labels, self.params.eval_fraction, self.params.split_seed)

    @cached_property
    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-column ``(mean, std)`` of the training rows (identity when ``standardize`` is off)."""
        dim = self.table.features.shape[1]
        if not self.params.standardize:
            return np.zeros(dim), np.ones(dim)
        train = self.table.features[self._splits[0]]
        mean, std = train.mean(axis=0), train.std(axis=0)
        return mean, np.where(std > 1e-8, std, 1.0)

    @cached_property
    def _vectors(self) -> np.ndarray:
        mean, std = self.statistics
        return ((self.table.features - mean) / std).astype(np.float32)

    def prepare(self, run_dir: Path | None) -> None:
        """Read the source and fit the statistics now, so errors come before training."""
        self._vectors  # noqa: B018 - computed for its side effects

    def _dataset(self, indices: np.ndarray, labeled: bool) -> VectorDataset:
        labels = self.table.labels[indices] if labeled and self.table.labels is not None else None
        return VectorDataset(self._vectors[indices], labels)

    def train_dataset(self) -> Dataset:
        """Training rows ``{"vector": float32 [D]}``."""
        return self._dataset(self._splits[0], labeled=False)

    def held_out_dataset(self) -> Dataset | None:
        """The held-out rows without labels (reconstruction error)."""
        test = self._splits[1]
        return self._dataset(test, labeled=False) if len(test) else None

    def eval_split(self) -> EvalSplit | None:
        """Labeled training rows vs the held-out rows; ``None`` without labels."""
        train, test = self._splits
        if self.table.labels is None or len(test) == 0:
            return None
        groups = None
        if self.table.groups is not None:
            groups = {
                "train": len({self.table.groups[i] for i in train}),
                "test": len({self.table.groups[i] for i in test}),
            }
        return EvalSplit(
            train=self._dataset(train, labeled=True),
            test=self._dataset(test, labeled=True),
            class_names=tuple(self.table.class_names),
            groups=groups,
        )

    def labeled_split(self, source: Params, test_fraction: float, seed: int) -> EvalSplit:
        """Another labeled table, standardised with this run's training statistics; grouped when it has groups."""
        if isinstance(source, CsvTableSource):
            path = source.path.expanduser()
            table = read_csv(path, source.label_column, source.columns, source.delimiter, source.group_column)
        elif isinstance(source, NumpyTableSource):
            path = source.path.expanduser()
            table = read_numpy(path, source.features_key, source.labels_key, source.label_column)
        else:
            raise ValueError("a tabular evaluation source must be a labeled CSV or numpy file")
        if table.features.shape[1] != self.dim:
            raise ValueError(f"{path} has {table.features.shape[1]} feature columns; the run was trained on {self.dim}")
        train, test, groups = split_table(table, test_fraction, seed)
        mean, std = self.statistics
        vectors = ((table.features - mean) / std).astype(np.float32)
        return EvalSplit(
            train=VectorDataset(vectors[train], table.labels[train]),
            test=VectorDataset(vectors[test], table.labels[test]),
            class_names=tuple(table.class_names),
            groups=groups,
            source=str(path),
        )

    def labeled_source(self, path: Path, label: str | None = None, group: str | None = None) -> dict[str, Any]:
        """A ``.csv`` (label column ``label`` unless named; ``group`` is a column) or a labeled ``.npz``."""
        if path.suffix.lower() == ".csv":
            return {"type": "csv", "path": str(path), "label_column": label or "label", "group_column": group}
        if path.suffix.lower() == ".npz" and group is None:
            return {"type": "numpy", "path": str(path), "labels_key": label or "labels"}
        if path.suffix.lower() == ".npz":
            raise ValueError("a numpy table source has no group option; use a CSV with --group COLUMN")
        raise ValueError(f"{path}: give a labeled .csv or .npz file")

    def raw_features(self, batch: Batch) -> Tensor:
        """The raw-input baseline: the (standardised) columns themselves, float32 ``[B, D]``."""
        return batch["vector"].float()

    def example_batch(self, batch_size: int, device: torch.device | str = "cpu") -> Batch:
        """Standard-normal vectors ``[B, D]``, shaped like standardised rows."""
        generator = torch.Generator().manual_seed(0)
        return {"vector": torch.randn(batch_size, self.dim, generator=generator).to(device)}

    @property
    def dim(self) -> int:
        """Number of feature columns ``D``."""
        return int(self.table.features.shape[1])

    def info(self) -> ModalityInfo:
        """``dim`` (vector size), ``value_range`` ``None`` (unbounded); ``extra``: ``num_classes``, ``skipped_rows``."""
        return ModalityInfo(
            dim=self.dim,
            value_range=None,
            extra={"num_classes": len(self.table.class_names), "skipped_rows": self.skipped_rows},
        )

    def input_spec(self) -> dict[str, Any]:
        """ONNX input ``vector`` float32 ``[batch, D]``, standardised before the model."""
        mean, std = self.statistics
        return {
            "inputs": {"vector": {"dtype": "float32", "shape": ["batch", self.dim]}},
            "dynamic_axes": {"vector": {0: "batch"}},
            "preprocessing": {
                "columns": list(self.table.column_names),
                "standardize": self.params.standardize,
                "mean": [float(v) for v in mean],
                "std": [float(v) for v in std],
                "normalization": "before_model",
                "formula": "vector[i] = (column_i - mean[i]) / std[i]",
            },
        }

    def fingerprint(self) -> str:
        source = self.params.source
        digest = hashlib.sha1(self.table.features.tobytes()).hexdigest()[:12]
        origin = source.name if isinstance(source, BundledTableSource) else str(source.path)
        return f"tabular:{source.type}:{origin}:{self.table.features.shape[0]}x{self.dim}:sha1={digest}"
