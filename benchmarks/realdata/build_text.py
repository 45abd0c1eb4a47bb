"""Debian package synopses labeled by archive section (games, sound, graphics, ...).

The text of a sample is a package's one-line description ("Real-time strategy game of ancient
warfare"), read from apt's package lists on this machine (``/var/lib/apt/lists/*Packages*``,
plain or compressed with lz4, gzip or xz). A group is the source package: the binary packages
built from one source share wording ("... (data files)", "... - development files"), so they
all sit on one side of the split. Identical synopses in a section are kept once, and a source
package contributes at most a few texts so large ones do not dominate. Lines of
``{"text", "label", "group"}`` JSON go to ``pretrain.jsonl`` and ``labeled.jsonl``.

The labeled side is drawn from the chosen sections only. The pretrain side is, by default,
every distinct synopsis in the lists (any section: users have far more unlabeled text than
labeled), minus every source package on the labeled side and every text equal to a labeled
one, so pretraining and the probe share no group and no text. ``pretrain_corpus="sections"``
gives the older, small pretrain side: the other groups of the chosen sections only.
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


#: what the pretrain side holds: every synopsis in the lists, or the chosen sections' only.
PRETRAIN_CORPORA = ("all", "sections")


def package_synopses(lists: list[Path]) -> list[dict[str, str]]:
    """``{text, label, group}`` for every package stanza with a synopsis of 2+ words, any section.

    ``label`` is the archive section without its area (``contrib/games`` -> ``games``), ``group``
    the source package (the binary package's own name when it names no source).
    """
    records = []
    for path in lists:
        for fields in stanzas(read_list(path)):
            synopsis = fields.get("Description", "").strip()
            if len(synopsis.split()) < 2:
                continue
            section = fields.get("Section", "").split("/")[-1]
            source = (fields.get("Source") or fields.get("Package", "")).split()[0]
            records.append({"text": synopsis, "label": section, "group": source})
    return records


def distinct_texts(records: list[dict[str, str]], key_fields: tuple[str, ...]) -> list[dict[str, str]]:
    """One record per distinct key (the lowercased text plus ``key_fields``), the smallest group kept.

    Sorted by (label, group, text) so the result does not depend on the order of the lists.
    """
    seen: dict[tuple[str, ...], dict[str, str]] = {}
    for record in records:
        key = (*(record[f] for f in key_fields), record["text"].lower())
        if key not in seen or record["group"] < seen[key]["group"]:
            seen[key] = record
    return sorted(seen.values(), key=lambda r: (r["label"], r["group"], r["text"]))


def collect(records: list[dict[str, str]], sections: tuple[str, ...]) -> list[dict[str, str]]:
    """One record per distinct (section, synopsis) of the chosen ``sections``."""
    return distinct_texts([r for r in records if r["label"] in sections], ("label",))


def unlabeled_corpus(records: list[dict[str, str]], labeled: list[dict[str, str]]) -> list[dict[str, str]]:
    """Every distinct synopsis (any section) whose source package and text are not on the labeled side.

    A synopsis is dropped when *any* package carrying it is built from a labeled-side source, so
    no labeled group leaks in through a second binary package or a copied description.
    """
    labeled_groups = {r["group"] for r in labeled}
    labeled_texts = {r["text"].lower() for r in labeled}
    tainted = {r["text"].lower() for r in records if r["group"] in labeled_groups} | labeled_texts
    return distinct_texts([r for r in records if r["text"].lower() not in tainted], ())


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
    pretrain_corpus: str = "all",
) -> dict:
    """Write ``pretrain.jsonl`` and ``labeled.jsonl`` under ``out`` and return the manifest entry.

    Args:
        pretrain_corpus: ``all`` (every other synopsis in the lists, see the module docstring)
            or ``sections`` (only the chosen sections' texts of the pretrain-side groups).

    Raises:
        MissingPackageLists: no package list, or a section with no package in it.
        ValueError: an unknown ``pretrain_corpus``.
    """
    if pretrain_corpus not in PRETRAIN_CORPORA:
        raise ValueError(f"pretrain_corpus must be one of {', '.join(PRETRAIN_CORPORA)}, got {pretrain_corpus!r}")
    lists = package_lists(lists_root)
    if not lists:
        raise MissingPackageLists(f"no apt package lists (*_Packages*) under {lists_root}; {INSTALL_HINT}")
    every_synopsis = package_synopses(lists)
    records = subsample(collect(every_synopsis, sections), per_group, per_class, seed)
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
    if pretrain_corpus == "all":
        sides["pretrain"] = unlabeled_corpus(every_synopsis, sides["labeled"])
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
        "pretrain_corpus": pretrain_corpus,
        "sides": describe_sides([(side, r["label"], r["group"]) for side, rows in sides.items() for r in rows]),
    }
