"""Labeled splits that keep groups apart, for any modality.

A *group* is whatever samples must not straddle the probe's train and test sides (a speaker,
a photo source, a document): when every sample of a test group is unseen at probe-train time,
a probe cannot score well by recognising the group instead of the class. Modalities find the
groups (from a path pattern, a JSONL field, a CSV column) and call :func:`group_split`.

Everything here is plain Python over indices, labels and group names: no torch, no numpy.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator


@dataclass(frozen=True)
class GroupSplit:
    """Sample indices of the probe-train and probe-test sides, and how many groups each holds.

    Attributes:
        train: sorted indices of the probe-train side.
        test: sorted indices of the probe-test side.
        train_groups: distinct groups on the train side.
        test_groups: distinct groups on the test side (none of them on the train side).
    """

    train: list[int]
    test: list[int]
    train_groups: int
    test_groups: int

    def group_counts(self) -> dict[str, int]:
        """``{"train": n, "test": n}``: distinct groups per side (for ``evaluation.json``)."""
        return {"train": self.train_groups, "test": self.test_groups}


def group_split(
    labels: Sequence[int], groups: Sequence[Hashable] | None, test_fraction: float, seed: int
) -> GroupSplit:
    """Split samples into probe-train and probe-test sides, whole groups at a time.

    Groups are visited in a seeded random order; each goes to the test side when that brings
    every class's test count closer to ``test_fraction`` of the class (stratified where the
    groups allow it), otherwise to the train side. No group is ever on both sides. With two or
    more groups, each side gets at least one.

    Args:
        labels: class index of each sample ``[N]``.
        groups: group of each sample ``[N]`` (any hashable), or ``None``: every sample is its own
            group, which makes this a plain stratified random split.
        test_fraction: wanted share of each class on the test side, in ``(0, 1)``.
        seed: makes the split deterministic.

    Raises:
        ValueError: ``test_fraction`` outside ``(0, 1)`` or ``groups`` of another length.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    keys: Sequence[Hashable] = range(len(labels)) if groups is None else groups
    if len(keys) != len(labels):
        raise ValueError(f"{len(keys)} groups for {len(labels)} labels")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        members[key].append(index)
    # Sorting by the text of a group makes the order independent of how the samples were listed.
    order = sorted(members, key=repr)
    random.Random(seed).shuffle(order)
    wanted = {label: count * test_fraction for label, count in Counter(labels).items()}
    in_test: Counter[int] = Counter()
    test_keys = []
    for key in order:
        counts = Counter(labels[i] for i in members[key])
        gain = sum(abs(in_test[c] - wanted[c]) - abs(in_test[c] + n - wanted[c]) for c, n in counts.items())
        if gain > 0:
            test_keys.append(key)
            in_test.update(counts)
    test_keys = _both_sides_used(order, test_keys)
    chosen = set(test_keys)
    test = sorted(i for key in test_keys for i in members[key])
    train = sorted(i for key in order if key not in chosen for i in members[key])
    return GroupSplit(train, test, len(order) - len(chosen), len(chosen))


def _both_sides_used(order: list[Hashable], test_keys: list[Hashable]) -> list[Hashable]:
    """With two or more groups, keep at least one group on each side."""
    if len(order) < 2:
        return test_keys
    if not test_keys:
        return [order[0]]
    if len(test_keys) == len(order):
        return test_keys[1:]
    return test_keys


def classes_without_training_samples(labels: Sequence[int], split: GroupSplit) -> list[int]:
    """Class indices present in ``labels`` that have no sample on the probe-train side, sorted."""
    trained = {labels[i] for i in split.train}
    return sorted(set(labels) - trained)


def groups_from_paths(paths: Sequence[str], pattern: str) -> list[str | None]:
    """The group of each relative path: what ``pattern`` captures, ``None`` where it does not match.

    ``pattern`` is a regular expression searched in the ``/``-separated path; the group is its
    named group ``group`` if it has one, else its first group, else the whole match
    (``speaker_(\\d+)`` on ``yes/speaker_07_take2.wav`` gives ``07``).

    Raises:
        ValueError: ``pattern`` is not a valid regular expression.
    """
    compiled = compile_group_pattern(pattern)
    found: list[str | None] = []
    for path in paths:
        match = compiled.search(path)
        if match is None:
            found.append(None)
        elif "group" in compiled.groupindex:
            found.append(match.group("group"))
        else:
            found.append(match.group(1) if compiled.groups else match.group(0))
    return found


def compile_group_pattern(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled, or a ValueError saying why it is not a valid regular expression."""
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(f"not a valid regular expression: {error}") from None


def checked_group_pattern(pattern: str | None) -> str | None:
    """``pattern`` unchanged when it compiles (or is None); a ValueError saying why otherwise."""
    if pattern is not None:
        compile_group_pattern(pattern)
    return pattern


#: a source's ``group_pattern`` field: optional, checked to compile when the recipe is validated.
GroupPattern = Annotated[str | None, AfterValidator(checked_group_pattern)]


def unmatched_paths_problem(paths: Sequence[str], groups: Sequence[str | None], pattern: str, root: str) -> str | None:
    """A message when ``pattern`` left some paths without a group (naming one), else ``None``."""
    missing = [path for path, group in zip(paths, groups, strict=True) if group is None]
    if not missing:
        return None
    if len(missing) == len(paths):
        return f"pattern '{pattern}' matches none of the {len(paths)} files under {root} (e.g. {missing[0]!r})"
    return (
        f"pattern '{pattern}' matches {len(paths) - len(missing)} of the {len(paths)} files under {root}; "
        f"every file needs a group (no match: {missing[0]!r})"
    )


def split_problem(
    labels: Sequence[int], split: GroupSplit, class_names: Sequence[str], min_train_per_class: int = 1
) -> str | None:
    """A message when the split has an empty side or leaves a class with fewer than ``min_train_per_class``
    probe-train samples (1: none at all; the evaluation asks for its largest few-shot k)."""
    if not split.test or not split.train:
        groups = split.train_groups + split.test_groups
        return f"cannot split {len(labels)} labeled samples in {groups} group(s) into probe-train and probe-test sides"
    missing = classes_without_training_samples(labels, split)
    if missing:
        return (
            f"the grouped split leaves class {_class_list(missing, class_names)} with no probe-train samples (all its "
            "groups went to the test side); add groups of that class, lower the test fraction or change the split seed"
        )
    counts = Counter(labels[i] for i in split.train)
    short = sorted(c for c in counts if counts[c] < min_train_per_class)
    if not short:
        return None
    fewest = min(counts[c] for c in short)
    return (
        f"the split leaves class {_class_list(short, class_names)} with {fewest} probe-train sample(s), fewer than "
        f"the largest few-shot k ({min_train_per_class}); lower evaluate.few_shot.shots, add samples or groups of "
        "that class, or lower the test fraction"
    )


def _class_list(classes: Sequence[int], class_names: Sequence[str]) -> str:
    return ", ".join(repr(class_names[c]) if c < len(class_names) else str(c) for c in classes)


def split_by_path_groups(
    paths: Sequence[str],
    labels: Sequence[int] | None,
    class_names: Sequence[str],
    pattern: str,
    root: str,
    test_fraction: float,
    seed: int,
    min_train_per_class: int = 1,
) -> GroupSplit:
    """:func:`group_split` of files whose groups come from ``pattern`` over their relative paths.

    Args:
        paths: ``/``-separated paths relative to ``root``.
        labels: class index per path, ``None`` when the source has no labels.
        class_names: name per class index (for messages).
        pattern: see :func:`groups_from_paths`.
        root: the source folder (for messages).

    Raises:
        ValueError: the source has no labels, ``pattern`` leaves a file without a group, or the
            split leaves a class without probe-train samples (the messages say which).
    """
    if labels is None:
        raise ValueError(
            f"grouping splits the labeled samples, but {root} has no labels (some files lie outside class subfolders)"
        )
    groups = groups_from_paths(paths, pattern)
    problem = unmatched_paths_problem(paths, groups, pattern, root)
    if problem is not None:
        raise ValueError(problem)
    split = group_split(labels, groups, test_fraction, seed)
    problem = split_problem(labels, split, class_names, min_train_per_class)
    if problem is not None:
        raise ValueError(problem)
    return split


def path_group_problems(
    paths: Sequence[str],
    labels: Sequence[int] | None,
    class_names: Sequence[str],
    pattern: str,
    root: str,
    test_fraction: float,
    seed: int,
    field: str = "group_pattern",
    min_train_per_class: int = 1,
) -> list[tuple[tuple[str | int, ...], str]]:
    """Why :func:`split_by_path_groups` cannot split these files, as ``Params.file_problems`` pairs.

    For the ``file_problems`` of a folder source with a group pattern: ``sslhub validate`` then
    reports a pattern leaving a file without a group, or a class without probe-train samples, at
    the pattern's recipe line.

    Args:
        paths, labels, class_names, pattern, root, test_fraction, seed: as for
            :func:`split_by_path_groups` (the files the source lists, relative to ``root``).
        field: the parameter holding the pattern.

    Returns:
        ``[((field,), message)]``, or ``[]`` when the split works.
    """
    try:
        split_by_path_groups(paths, labels, class_names, pattern, root, test_fraction, seed, min_train_per_class)
    except ValueError as error:
        return [((field,), str(error))]
    return []
