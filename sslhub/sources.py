"""Modality-free helpers for data sources: files under a folder, class subfolders, fingerprints,
and a deterministic (stratified) hold-out split.

Public (``sslhub.list_files``...) so that every modality plugin, and a composite modality that
pairs files of several kinds, reads folders and splits data the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def normalised_suffixes(suffixes: Sequence[str]) -> set[str]:
    """``suffixes`` lower-cased, each with its leading dot (``"PNG"`` -> ``".png"``)."""
    return {s.lower() if s.startswith(".") else f".{s.lower()}" for s in suffixes}


def list_files(root: Path, suffixes: Sequence[str]) -> list[Path]:
    """Files under ``root`` (recursively) with one of ``suffixes`` (case-insensitive), sorted, unopened.

    Raises:
        ValueError: ``root`` is not a folder.
    """
    if not root.is_dir():
        raise ValueError(f"folder source: {root} is not a directory")
    wanted = normalised_suffixes(suffixes)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in wanted)


def folder_classes(root: Path, paths: Sequence[Path]) -> tuple[list[int] | None, list[str]]:
    """Class index per path from its first-level subfolder under ``root``, and the sorted class names.

    ``(None, [])`` when some file lies directly in ``root``: the folder has no labels.
    """
    relative = [p.relative_to(root) for p in paths]
    if any(len(r.parts) < 2 for r in relative):
        return None, []
    class_names = sorted({r.parts[0] for r in relative})
    index = {name: i for i, name in enumerate(class_names)}
    return [index[r.parts[0]] for r in relative], class_names


def folder_fingerprint(root: Path, paths: Sequence[Path]) -> str:
    """A short hash of the paths relative to ``root`` and their file sizes."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(str(path.stat().st_size).encode())
    return digest.hexdigest()[:12]


def holdout_split(
    count: int, labels: Sequence[int] | np.ndarray | None, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(count)`` into kept and held-out indices, deterministically in ``seed``.

    With labels the split is stratified: each class holds out ``fraction`` of its samples
    (rounded, at least one when the class has two or more). Unlike :func:`sslhub.group_split`
    (probe splits that keep groups apart), this is the plain split of a modality's own data.

    Returns:
        sorted kept indices and sorted held-out indices, int64.
    """
    rng = np.random.default_rng(seed)
    if fraction <= 0:
        return np.arange(count, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if labels is None:
        order = rng.permutation(count)
        n_test = int(round(count * fraction))
        return np.sort(order[n_test:]), np.sort(order[:n_test])
    labels = np.asarray(labels)
    train, test = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_test = int(round(len(members) * fraction))
        if n_test == 0 and len(members) >= 2:
            n_test = 1
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)).astype(np.int64), np.sort(np.concatenate(test)).astype(np.int64)
