"""Debian package synopses labeled by archive section (games, sound, graphics, ...).

The text of a sample is a package's one-line description ("Real-time strategy game of ancient
warfare"), read from apt's package lists on this machine (``/var/lib/apt/lists/*Packages*``,
plain or compressed with lz4, gzip or xz). A group is the source package: the binary packages
built from one source share wording ("... (data files)", "... - development files"), so they
all sit on one side of the split. Identical synopses in a section are kept once, and a source
package contributes at most a few texts so large ones do not dominate. Lines of
``{"text", "label", "group"}`` JSON go to ``pretrain.jsonl`` and ``labeled.jsonl``.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from groups import describe_sides, split_groups

APT_LISTS = Path("/var/lib/apt/lists")

#: default topics: archive sections about what a program is for, not what it is written in.
DEFAULT_SECTIONS = ("games", "sound", "graphics", "science", "net", "editors")

INSTALL_HINT = "run 'apt-get update' (Debian/Ubuntu) so apt's package lists exist under /var/lib/apt/lists"


class MissingPackageLists(RuntimeError):
    """No readable apt package list; the message says how to get one."""


def read_list(path: Path) -> str:
    """The text of one package list, decompressed by its suffix."""
    suffix = path.suffix
    if suffix == ".lz4":
        if shutil.which("lz4") is None:
            raise MissingPackageLists(
                f"{path} is lz4-compressed and the lz4 command is missing; apt-get install -y lz4"
            )
        return subprocess.run(["lz4", "-dc", str(path)], capture_output=True, check=True).stdout.decode(
            "utf-8", "replace"
        )
    openers = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}
    opener = openers.get(suffix, open)
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        return handle.read()


def package_lists(root: Path = APT_LISTS) -> list[Path]:
    """Binary package lists under ``root`` (``*_Packages`` and compressed variants)."""
    if not root.is_dir():
        return []
    compressed = (".lz4", ".gz", ".xz", ".bz2")
    return sorted(
        p
        for p in root.iterdir()
        if p.is_file() and (p.name.endswith("_Packages") or p.name.endswith(tuple(f"_Packages{c}" for c in compressed)))
    )


def stanzas(text: str) -> Iterator[dict[str, str]]:
    """The fields of each package stanza (continuation lines of a field are dropped)."""
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if fields:
            yield fields


def collect(lists: list[Path], sections: tuple[str, ...]) -> list[dict[str, str]]:
    """One record ``{text, label, group}`` per distinct (section, synopsis), sorted for determinism."""
    seen: dict[tuple[str, str], dict[str, str]] = {}
    for path in lists:
        for fields in stanzas(read_list(path)):
            section = fields.get("Section", "").split("/")[-1]
            synopsis = fields.get("Description", "").strip()
            if section not in sections or len(synopsis.split()) < 2:
                continue
            source = (fields.get("Source") or fields.get("Package", "")).split()[0]
            key = (section, synopsis.lower())
            if key not in seen or source < seen[key]["group"]:
                seen[key] = {"text": synopsis, "label": section, "group": source}
    return sorted(seen.values(), key=lambda r: (r["label"], r["group"], r["text"]))


def subsample(records: list[dict[str, str]], per_group: int, per_class: int, seed: int) -> list[dict[str, str]]:
    """At most ``per_group`` texts per source package, then at most ``per_class`` per section (seeded)."""
    rng = random.Random(seed)
    by_group: dict[tuple[str, str], list[dict[str, str]]] = {}
    for record in records:
        by_group.setdefault((record["label"], record["group"]), []).append(record)
    capped = [r for key in sorted(by_group) for r in rng.sample(by_group[key], min(per_group, len(by_group[key])))]
    by_class: dict[str, list[str]] = {}
    for record in capped:
        by_class.setdefault(record["label"], []).append(record["group"])
    kept_groups: set[tuple[str, str]] = set()
    for label, groups in by_class.items():
        distinct = sorted(set(groups))
        rng.shuffle(distinct)
        total = 0
        for group in distinct:  # whole source packages, until the section's quota is reached
            if total >= per_class:
                break
            kept_groups.add((label, group))
            total += groups.count(group)
    return [r for r in capped if (r["label"], r["group"]) in kept_groups]


def build_text(
    out: Path,
    per_class: int,
    labeled_fraction: float,
    seed: int,
    sections: tuple[str, ...] = DEFAULT_SECTIONS,
    per_group: int = 2,
    lists_root: Path = APT_LISTS,
) -> dict:
    """Write ``pretrain.jsonl`` and ``labeled.jsonl`` under ``out`` and return the manifest entry.

    Raises:
        MissingPackageLists: no package list, or a section with no package in it.
    """
    lists = package_lists(lists_root)
    if not lists:
        raise MissingPackageLists(f"no apt package lists (*_Packages*) under {lists_root}; {INSTALL_HINT}")
    records = subsample(collect(lists, sections), per_group, per_class, seed)
    empty = sorted(set(sections) - {r["label"] for r in records})
    if empty:
        raise MissingPackageLists(
            f"no packages of section(s) {', '.join(empty)} in {len(lists)} package list(s) under {lists_root}"
        )
    # A source package can ship into two sections; it is one group, on one side.
    pretrain, labeled = split_groups((r["group"] for r in records), labeled_fraction, seed)
    labeled_groups = set(labeled)
    out.mkdir(parents=True, exist_ok=True)
    sides = {"pretrain": [], "labeled": []}
    for record in records:
        sides["labeled" if record["group"] in labeled_groups else "pretrain"].append(record)
    for side, rows in sides.items():
        rows = random.Random(f"{seed}:{side}").sample(rows, len(rows))  # mix sections in file order
        with (out / f"{side}.jsonl").open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return {
        "classes": list(sections),
        "group": "Debian source package",
        "layout": "pretrain.jsonl / labeled.jsonl with fields text, label, group",
        "text_field": "text",
        "label_field": "label",
        "group_field": "group",
        "package_lists": [str(p) for p in lists],
        "sides": describe_sides([(side, r["label"], r["group"]) for side, rows in sides.items() for r in rows]),
    }
