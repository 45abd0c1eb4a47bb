"""The 26 capital letters rendered in the fonts installed on this machine.

A group is a typeface design: a font family with its weights, widths and slants, and with the
metric clones of one design merged (Nimbus Sans, TeX Gyre Heros, FreeSans and Liberation Sans
are all Helvetica/Arial shapes), so a held-out group is a style the encoder never saw. Each
glyph is rendered large, cropped to its ink, scaled so its longer side is a random 50-85% of
the canvas, placed with a random offset, and written as a 32x32 gray PNG (white ink on black)
under ``<side>/<letter>/<family>__<n>.png``.
"""

from __future__ import annotations

import random
import re
import shutil
import string
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from groups import FOLDER_GROUP_PATTERN, describe_sides, sample_file_name, slug, split_groups
from PIL import Image, ImageDraw, ImageFont

LETTERS = tuple(string.ascii_uppercase)
CANVAS = 32
RENDER_SIZE = 96  # glyphs are drawn large and downscaled, for clean anti-aliasing

INSTALL_HINT = (
    "install fonts with, e.g.: apt-get install -y fontconfig fonts-dejavu-core fonts-dejavu-extra "
    "fonts-liberation2 fonts-freefont-ttf fonts-urw-base35 fonts-texgyre fonts-lato fonts-open-sans "
    "fonts-linuxlibertine fonts-sil-gentium fonts-comic-neue fonts-go fonts-dustin"
)

#: families whose "letters" are symbols, keyboard caps or decorated initials, not letter shapes.
EXCLUDED_FAMILIES = {
    "d050000l",
    "standard-symbols-ps",
    "dejavu-math-tex-gyre",
    "linux-libertine-initials-o",
    "linux-biolinum-keyboard-o",
    "opensymbol",
}

#: metric clones of one design, merged into one group so a held-out design is really unseen.
CLONES = {
    "helvetica": {
        "nimbus-sans",
        "nimbus-sans-narrow",
        "tex-gyre-heros",
        "tex-gyre-heros-cn",
        "freesans",
        "liberation-sans",
    },
    "times": {"nimbus-roman", "tex-gyre-termes", "freeserif", "liberation-serif"},
    "courier": {"nimbus-mono-ps", "tex-gyre-cursor", "freemono", "liberation-mono"},
    "palatino": {"p052", "tex-gyre-pagella"},
    "century-schoolbook": {"c059", "tex-gyre-schola"},
    "bookman": {"urw-bookman", "tex-gyre-bonum"},
    "avant-garde": {"urw-gothic", "tex-gyre-adventor"},
    "zapf-chancery": {"z003", "tex-gyre-chorus"},
    "linux-libertine": {"linux-libertine-o", "linux-libertine-display-o"},
    "gentium": {"gentium", "gentiumalt"},
}

#: words naming a weight, width or cut of a family rather than a different design.
STYLE_WORDS = re.compile(
    r"\b(condensed|cn|narrow|light|thin|hairline|medium|semibold|extrabold|extra|bold|black|heavy|"
    r"smallcaps|display|std|no2|no3|08|12)\b",
)


class MissingFonts(RuntimeError):
    """Too few usable fonts; the message says how to install more."""


@dataclass(frozen=True)
class FontFile:
    """One font file that covers A-Z."""

    path: str
    family: str
    style: str

    @property
    def group(self) -> str:
        return design_group(self.family)


def design_group(family: str) -> str:
    """The group of a fontconfig family name: the family without style words, clones merged."""
    name = slug(family.split(",")[0])
    for design, members in CLONES.items():
        if name in members:
            return design
    base = slug(STYLE_WORDS.sub(" ", name.replace("-", " ")))
    for design, members in CLONES.items():
        if base in members:
            return design
    return base


def list_fonts() -> list[FontFile]:
    """Font files with every capital letter (``fc-list``), one per family and style, OpenType first."""
    if shutil.which("fc-list") is None:
        raise MissingFonts(f"fc-list (fontconfig) is not installed; {INSTALL_HINT}")
    listing = subprocess.run(
        ["fc-list", "--format", "%{file}\t%{family}\t%{style}\n", ":charset=41-5a"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    chosen: dict[tuple[str, str], FontFile] = {}
    rank = {".otf": 0, ".ttf": 1, ".ttc": 2}
    for line in sorted(listing.splitlines()):
        parts = line.split("\t")
        if len(parts) != 3 or Path(parts[0]).suffix.lower() not in rank:
            continue  # Type 1 and bitmap fonts: Pillow's FreeType loader is unreliable with them
        font = FontFile(path=parts[0], family=parts[1].split(",")[0], style=parts[2].split(",")[0])
        if slug(font.family) in EXCLUDED_FAMILIES:
            continue
        key = (font.family, font.style)
        if key not in chosen or rank[Path(font.path).suffix.lower()] < rank[Path(chosen[key].path).suffix.lower()]:
            chosen[key] = font
    return sorted(chosen.values(), key=lambda f: (f.group, f.family, f.style))


def glyph_ink(font: ImageFont.FreeTypeFont, letter: str) -> np.ndarray | None:
    """The letter's ink, cropped to its bounding box (uint8 [h, w]), or None when nothing is drawn."""
    image = Image.new("L", (RENDER_SIZE * 2, RENDER_SIZE * 2), 0)
    ImageDraw.Draw(image).text((RENDER_SIZE // 2, RENDER_SIZE // 2), letter, fill=255, font=font)
    box = image.getbbox()
    if box is None or box[2] - box[0] < 2 or box[3] - box[1] < 2:
        return None
    return np.asarray(image.crop(box))


def place(ink: np.ndarray, rng: random.Random) -> Image.Image:
    """Scale the ink so its longer side is 50-85% of the canvas and paste it at a jittered position."""
    height, width = ink.shape
    target = rng.uniform(0.5, 0.85) * CANVAS
    scale = target / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    glyph = Image.fromarray(ink).resize((new_w, new_h), Image.Resampling.LANCZOS)
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    left = (CANVAS - new_w) // 2 + rng.randint(-3, 3)
    top = (CANVAS - new_h) // 2 + rng.randint(-3, 3)
    canvas.paste(glyph, (min(max(left, 0), CANVAS - new_w), min(max(top, 0), CANVAS - new_h)))
    return canvas


def usable_fonts(fonts: list[FontFile]) -> list[tuple[FontFile, dict[str, np.ndarray]]]:
    """Fonts that load and draw every letter distinctly from a missing glyph, with each letter's ink."""
    usable = []
    for font_file in fonts:
        try:
            font = ImageFont.truetype(font_file.path, RENDER_SIZE)
        except OSError:
            continue
        inks = {letter: glyph_ink(font, letter) for letter in LETTERS}
        missing = glyph_ink(font, "\ue000")  # a private-use code point: the font's "missing" box
        if any(ink is None for ink in inks.values()):
            continue
        if missing is not None and any(
            ink.shape == missing.shape and np.array_equal(ink, missing) for ink in inks.values()
        ):
            continue
        usable.append((font_file, inks))
    return usable


def cap_per_group(fonts: list[FontFile], cap: int, seed: int) -> list[FontFile]:
    """At most ``cap`` font files per design (a seeded choice), so big families do not dominate."""
    by_group: dict[str, list[FontFile]] = {}
    for font in fonts:
        by_group.setdefault(font.group, []).append(font)
    kept = []
    for group, members in sorted(by_group.items()):
        kept += sorted(random.Random(f"{seed}:{group}").sample(members, min(cap, len(members))), key=lambda f: f.path)
    return kept


def build_images(
    out: Path, per_letter: int, labeled_fraction: float, seed: int, files_per_design: int = 8, min_groups: int = 4
) -> dict:
    """Write the image set under ``out`` (``pretrain/`` and ``labeled/``) and return its manifest entry.

    Args:
        out: folder for this modality (created).
        per_letter: renderings of each letter per font file (each with its own size and offset).
        labeled_fraction: share of typeface designs held out on the labeled side.
        seed: seed of the design split and the jitter.
        files_per_design: at most this many font files (weights, slants) per design.
        min_groups: fewer usable designs than this raises :class:`MissingFonts`.
    """
    fonts = usable_fonts(cap_per_group(list_fonts(), files_per_design, seed))
    groups = sorted({f.group for f, _ in fonts})
    if len(groups) < min_groups:
        raise MissingFonts(
            f"found {len(groups)} usable typeface design(s) ({', '.join(groups) or 'none'}), need {min_groups}; {INSTALL_HINT}"
        )
    pretrain, labeled = split_groups(groups, labeled_fraction, seed)
    side_of = {**dict.fromkeys(pretrain, "pretrain"), **dict.fromkeys(labeled, "labeled")}
    numbers: dict[tuple[str, str], int] = {}
    records = []
    for font_file, inks in fonts:
        rng = random.Random(f"{seed}:{font_file.path}")
        side = side_of[font_file.group]
        for letter in LETTERS:
            for _ in range(per_letter):
                number = numbers.get((letter, font_file.group), 0)
                numbers[(letter, font_file.group)] = number + 1
                target = out / side / letter / sample_file_name(font_file.group, number, "png")
                target.parent.mkdir(parents=True, exist_ok=True)
                place(inks[letter], rng).save(target)
                records.append((side, letter, font_file.group))
    members: dict[str, set[str]] = {}
    for font_file, _ in fonts:
        members.setdefault(font_file.group, set()).add(font_file.family)
    return {
        "classes": list(LETTERS),
        "group": "typeface design (font family, metric clones merged)",
        "image_size": CANVAS,
        "layout": "<side>/<letter>/<design>__<n>.png",
        "group_pattern": FOLDER_GROUP_PATTERN,
        "font_files": len(fonts),
        "sides": describe_sides(records),
        "designs": {"pretrain": pretrain, "labeled": labeled},
        "families": {group: sorted(names) for group, names in sorted(members.items())},
    }
