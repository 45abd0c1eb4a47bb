"""Image-caption pairs from the Adwaita icon theme (Debian package ``adwaita-icon-theme``).

Every icon has a freedesktop name that says in words what it shows ("network-wireless-signal-good",
"folder-pictures") and lies in a context folder (actions, devices, status, places...) at several
sizes. A sample is one icon file at one source size: the PNG composited on white (the icons are
drawn on a transparent background), RGB, resized to one common size, with the name's words as its
caption (``network wireless signal good``; the ``symbolic`` suffix dropped). Its label is the
context; its group is the name with any ``rtl``/``ltr`` suffix removed (a mirrored variant is the
same picture), so a held-out group is an icon never seen at any size. Contexts with too few
names, and ``apps``, are not classes. A ``legacy`` (full-colour) icon joins the context that
holds its name in the theme's other folders; a name in several contexts, or in none, is left
out. Files: ``<side>/<context>/<name>__<n>.png`` with ``<name>__<n>.txt`` (the caption) beside.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from groups import FOLDER_GROUP_PATTERN, describe_sides, sample_file_name, split_groups
from PIL import Image

THEME = Path("/usr/share/icons/Adwaita")
CANVAS = 32
#: context folders that are not classes: ``legacy`` holds icons of every context, ``apps`` one icon.
NOT_CLASSES = {"legacy", "apps"}
#: a class needs at least this many distinct icon names (the probe holds out whole names).
MIN_NAMES = 15
INSTALL_HINT = "install the icon theme with: apt-get install -y adwaita-icon-theme"
SIZE_FOLDER = re.compile(r"^(\d+)x\1$")
MIRROR_WORDS = ("rtl", "ltr")


class MissingIconTheme(RuntimeError):
    """The icon theme is not installed, or holds too few usable icons."""


@dataclass(frozen=True)
class Icon:
    """One icon file at one source size."""

    path: Path
    size: int
    context: str
    words: tuple[str, ...]

    @property
    def group(self) -> str:
        """The name without a trailing mirror word: ``go-next-rtl`` and ``go-next`` are one group."""
        words = self.words[:-1] if len(self.words) > 1 and self.words[-1] in MIRROR_WORDS else self.words
        return "-".join(words)

    @property
    def caption(self) -> str:
        return " ".join(self.words)


def name_words(file_name: str) -> tuple[str, ...]:
    """The words of an icon file's name, the ``symbolic`` suffix dropped.

    ``audio-volume-high-rtl-symbolic.symbolic.png`` -> ``(audio, volume, high, rtl)``;
    ``application-exit-symbolic-rtl.symbolic.png`` -> ``(application, exit, rtl)``;
    ``emblem-symbolic-link.png`` keeps its ``symbolic``: there it is part of the name.
    """
    stem = file_name.removesuffix(".png").removesuffix(".symbolic")
    words = [word for word in stem.lower().split("-") if word]
    if words[-1:] == ["symbolic"]:
        words = words[:-1]
    elif len(words) > 2 and words[-2] == "symbolic" and words[-1] in MIRROR_WORDS:
        words = words[:-2] + words[-1:]
    return tuple(words)


def scan_theme(theme: Path) -> list[Icon]:
    """Every ``<size>x<size>/<context>/<name>.png`` of the theme, context as found (legacy included)."""
    icons = []
    for size_folder in sorted(theme.iterdir()) if theme.is_dir() else []:
        match = SIZE_FOLDER.match(size_folder.name)
        if match is None or not size_folder.is_dir():
            continue
        for path in sorted(size_folder.glob("*/*.png")):
            words = name_words(path.name)
            if words and all(re.fullmatch(r"[a-z0-9]+", word) for word in words):
                icons.append(Icon(path, int(match.group(1)), path.parent.name, words))
    return icons


def labeled_icons(icons: list[Icon], min_names: int) -> tuple[list[Icon], dict[str, int]]:
    """Icons with their class context (legacy ones moved to their name's context), and what was dropped."""
    contexts: dict[str, set[str]] = defaultdict(set)
    for icon in icons:
        if icon.context != "legacy":
            contexts[icon.group].add(icon.context)
    names_per_context: dict[str, set[str]] = defaultdict(set)
    for group, found in contexts.items():
        if len(found) == 1:
            names_per_context[next(iter(found))].add(group)
    classes = {c for c, names in names_per_context.items() if len(names) >= min_names and c not in NOT_CLASSES}
    kept, dropped = [], defaultdict(int)
    for icon in icons:
        found = contexts.get(icon.group, set())
        if len(found) != 1:
            dropped["ambiguous context" if found else "legacy name in no other context"] += 1
            continue
        context = next(iter(found))
        if context not in classes:
            dropped[f"context {context} (not a class)"] += 1
            continue
        kept.append(Icon(icon.path, icon.size, context, icon.words))
    return kept, dict(sorted(dropped.items()))


def on_white(path: Path, size: int) -> Image.Image:
    """The icon composited on a white background, RGB, resized to ``size`` x ``size``."""
    with Image.open(path) as source:
        rgba = source.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    flat = Image.alpha_composite(white, rgba).convert("RGB")
    return flat if flat.size == (size, size) else flat.resize((size, size), Image.Resampling.LANCZOS)


def build_icons(out: Path, labeled_fraction: float, seed: int, theme: Path = THEME, min_names: int = MIN_NAMES) -> dict:
    """Write the image-caption set under ``out`` (``pretrain/`` and ``labeled/``) and return its manifest entry.

    Args:
        out: folder for this set (created).
        labeled_fraction: share of icon names held out on the labeled side.
        seed: seed of the name split.
        theme: the icon theme's folder.
        min_names: a context with fewer distinct names is not a class.

    Raises:
        MissingIconTheme: no theme at ``theme``, or fewer than two classes in it.
    """
    icons, dropped = labeled_icons(scan_theme(theme), min_names)
    classes = sorted({icon.context for icon in icons})
    if len(classes) < 2:
        raise MissingIconTheme(
            f"{theme}: found {len(classes)} icon context(s) with {min_names}+ names, need 2; {INSTALL_HINT}"
        )
    pretrain, labeled = split_groups([icon.group for icon in icons], labeled_fraction, seed)
    side_of = {**dict.fromkeys(pretrain, "pretrain"), **dict.fromkeys(labeled, "labeled")}
    numbers: dict[str, int] = defaultdict(int)
    records = []
    for icon in icons:
        side = side_of[icon.group]
        target = out / side / icon.context / sample_file_name(icon.group, numbers[icon.group], "png")
        numbers[icon.group] += 1
        target.parent.mkdir(parents=True, exist_ok=True)
        on_white(icon.path, CANVAS).save(target)
        target.with_suffix(".txt").write_text(icon.caption + "\n")
        records.append((side, icon.context, icon.group))
    return {
        "modality": "image_text",
        "classes": classes,
        "group": "icon name (a mirrored rtl/ltr variant is the same name)",
        "image_size": CANVAS,
        "layout": "<side>/<context>/<name>__<n>.png with <name>__<n>.txt (the caption) beside",
        "group_pattern": FOLDER_GROUP_PATTERN,
        "theme": str(theme),
        "source_sizes": sorted({icon.size for icon in icons}),
        "dropped": dropped,
        "sides": describe_sides(records),
    }
