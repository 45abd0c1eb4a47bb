"""Group bookkeeping shared by the real-data builders.

Every builder assigns each sample a class and a group (a voice, a font family, a source
package). Whole groups are put on one side of the suite's split: the *pretrain* side (the
unlabeled data a recipe trains on) or the *labeled* side (the evaluation set, which the
evaluation splits again by group into probe-train and probe-test). So no group the probe is
tested on was seen in pretraining, and with a grouped evaluation split none was seen by the
probe either.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: separator between the group and the sample number in file names: ``<class>/<group>__<n>.ext``.
GROUP_SEPARATOR = "__"

#: regex over a sample's path relative to its side's folder; the named group is the sample's group.
FOLDER_GROUP_PATTERN = r"^[^/]+/(?P<group>[^/]+)__\d+\.[a-z0-9]+$"


def slug(name: str) -> str:
    """A file-name-safe group or class name: lowercase letters, digits and single dashes."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not text:
        raise ValueError(f"name {name!r} has no letters or digits to build a file name from")
    return text


def sample_file_name(group: str, number: int, extension: str) -> str:
    """``<group>__<number>.<extension>``, the name :data:`FOLDER_GROUP_PATTERN` reads back."""
    if GROUP_SEPARATOR in group or "/" in group:
        raise ValueError(f"group {group!r} may not contain {GROUP_SEPARATOR!r} or '/'")
    return f"{group}{GROUP_SEPARATOR}{number}.{extension}"


def split_groups(groups: Iterable[str], labeled_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Partition the distinct ``groups`` into (pretrain, labeled) sides, deterministically.

    Args:
        groups: group names (repeats are fine).
        labeled_fraction: share of groups for the labeled side, in (0, 1).
        seed: seed of the shuffle.

    Returns:
        sorted pretrain groups and sorted labeled groups; each side has at least one group.

    Raises:
        ValueError: fewer than two distinct groups, or a fraction outside (0, 1).
    """
    if not 0 < labeled_fraction < 1:
        raise ValueError(f"labeled_fraction must be in (0, 1), got {labeled_fraction}")
    distinct = sorted(set(groups))
    if len(distinct) < 2:
        raise ValueError(f"need at least 2 groups to hold some out, got {len(distinct)}")
    random.Random(seed).shuffle(distinct)
    n_labeled = min(len(distinct) - 1, max(1, round(len(distinct) * labeled_fraction)))
    return sorted(distinct[n_labeled:]), sorted(distinct[:n_labeled])


@dataclass
class SideCounts:
    """How many samples and groups one side holds, and the samples per class."""

    samples: int = 0
    groups: set[str] = field(default_factory=set)
    per_class: dict[str, int] = field(default_factory=dict)

    def add(self, label: str, group: str) -> None:
        self.samples += 1
        self.groups.add(group)
        self.per_class[label] = self.per_class.get(label, 0) + 1

    def as_json(self) -> dict:
        return {
            "samples": self.samples,
            "groups": len(self.groups),
            "per_class": dict(sorted(self.per_class.items())),
        }


def describe_sides(
    records: Sequence[tuple[str, str, str]],
) -> dict[str, dict]:
    """Counts per side from ``(side, label, group)`` records, for the manifest."""
    sides: dict[str, SideCounts] = {}
    for side, label, group in records:
        sides.setdefault(side, SideCounts()).add(label, group)
    shared = set.intersection(*(s.groups for s in sides.values())) if len(sides) > 1 else set()
    if shared:
        raise AssertionError(f"groups on both sides of the split: {sorted(shared)[:5]}")
    return {side: counts.as_json() for side, counts in sorted(sides.items())}
