"""Image-caption pairs from two emoji fonts (Debian packages ``fonts-noto-color-emoji``, ``fonts-symbola``).

Unicode's ``emoji-test.txt`` (package ``unicode-data``) lists every emoji with its CLDR name
("grinning face with big eyes") under a group (Smileys & Emotion, Animals & Nature, Food & Drink,
...). A sample is one emoji drawn by one design: Noto Color Emoji draws every emoji in colour,
Symbola the single-character ones of Unicode 9 in black outline; each is cropped to its ink,
centred on a white square and resized to one common size. Its caption is the name's words, its
label the Unicode group, and its group the name without the words that only say who (``man``,
``woman``, ``person``...), so "man cook", "woman cook" and "cook" are one group and a held-out
group is an emoji never seen in any design or gender. Skin-tone variants (the same drawing in
another colour) and the ``Component`` group are left out. Unlike the icon set's contexts, the
groups follow the look (faces, animals, food, vehicles, flags), so this set tells a method's
shortfall on the icons from the icons' filing conventions. Files: ``<side>/<group>/<name>__<n>.png``
with ``<name>__<n>.txt`` (the caption) beside.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from groups import FOLDER_GROUP_PATTERN, describe_sides, sample_file_name, slug, split_groups
from PIL import Image, ImageDraw, ImageFont

EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
NOTO = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
SYMBOLA = Path("/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf")
CANVAS = 32
#: Noto Color Emoji is a bitmap font with one strike: FreeType opens it at this size only.
NOTO_SIZE = 109
OUTLINE_SIZE = 96
INSTALL_HINT = "install them with: apt-get install -y unicode-data fonts-noto-color-emoji fonts-symbola"
SKIN_TONES = {0x1F3FB, 0x1F3FC, 0x1F3FD, 0x1F3FE, 0x1F3FF}
VARIATION_SELECTOR = 0xFE0F
NOT_A_CLASS = "Component"
#: words that say who is shown, not what: "man cook" and "woman cook" are the cook
WHO_WORDS = {"man", "woman", "person", "men", "women", "people"}
LINE = re.compile(r"^(?P<codes>[0-9A-F ]+?)\s*;\s*(?P<status>[a-z-]+)\s*#\s*\S+\s+E\d+\.\d+\s+(?P<name>.+)$")


class MissingEmojiData(RuntimeError):
    """The emoji list or the colour emoji font is not installed."""


@dataclass(frozen=True)
class Emoji:
    """One emoji of the list: its code points, CLDR name and Unicode group."""

    codes: tuple[int, ...]
    name: str
    category: str

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(re.findall(r"[a-z0-9]+", self.name.lower()))

    @property
    def caption(self) -> str:
        return " ".join(self.words)

    @property
    def group(self) -> str:
        """The name's words without the ones that only say who (kept when nothing else is left)."""
        words = [word for word in self.words if word not in WHO_WORDS]
        return slug(" ".join(words or self.words))

    @property
    def text(self) -> str:
        return "".join(chr(code) for code in self.codes)

    @property
    def single_character(self) -> int | None:
        """The one code point this emoji is (a variation selector aside), or None for a sequence."""
        codes = [code for code in self.codes if code != VARIATION_SELECTOR]
        return codes[0] if len(codes) == 1 else None


def parse_emoji_test(lines: Iterable[str]) -> Iterator[Emoji]:
    """The fully-qualified emoji of an ``emoji-test.txt``, skin-tone variants and components left out."""
    category = None
    for line in lines:
        if line.startswith("# group:"):
            category = line.split(":", 1)[1].strip()
            continue
        match = LINE.match(line.strip())
        if match is None or match["status"] != "fully-qualified" or category in (None, NOT_A_CLASS):
            continue
        codes = tuple(int(code, 16) for code in match["codes"].split())
        if SKIN_TONES.isdisjoint(codes):
            yield Emoji(codes, match["name"].strip(), category)


@dataclass(frozen=True)
class Design:
    """One emoji font and how to draw a glyph of it in ink on white."""

    name: str
    font: ImageFont.FreeTypeFont
    colour: bool
    covers: frozenset[int] | None  # single characters it draws; None: it draws every sequence too

    def draws(self, emoji: Emoji) -> bool:
        if self.covers is None:
            return True
        return emoji.single_character is not None and emoji.single_character in self.covers

    def render(self, emoji: Emoji, size: int) -> Image.Image:
        """The glyph cropped to its ink, centred on a white square with a small margin, ``size`` x ``size``."""
        side = int(self.font.size * 1.6)
        canvas = Image.new("RGB", (side, side), "white")
        draw = ImageDraw.Draw(canvas)
        # a design that covers single characters only is given the character without its selector
        text = emoji.text if self.covers is None else chr(emoji.single_character)
        draw.text((side // 8, side // 8), text, font=self.font, fill="black", embedded_color=self.colour)
        ink = Image.eval(canvas.convert("L"), lambda v: 255 if v < 250 else 0).getbbox()
        if ink is None:
            raise ValueError(f"{self.name} drew nothing for {emoji.name!r}")
        glyph = canvas.crop(ink)
        square = max(glyph.size) * 9 // 8 + 1
        framed = Image.new("RGB", (square, square), "white")
        framed.paste(glyph, ((square - glyph.width) // 2, (square - glyph.height) // 2))
        return framed.resize((size, size), Image.Resampling.LANCZOS)


def font_characters(path: Path) -> frozenset[int]:
    """The code points ``path``'s character map draws."""
    from fontTools.ttLib import TTFont

    with TTFont(path, lazy=True) as font:
        return frozenset(font.getBestCmap())


def designs(noto: Path, symbola: Path | None) -> list[Design]:
    """The colour design (required) and the outline one (when installed)."""
    if not noto.is_file():
        raise MissingEmojiData(f"{noto}: the colour emoji font is not installed; {INSTALL_HINT}")
    found = [Design("noto", ImageFont.truetype(str(noto), NOTO_SIZE, layout_engine=ImageFont.Layout.RAQM), True, None)]
    if symbola is not None and symbola.is_file():
        outline = ImageFont.truetype(str(symbola), OUTLINE_SIZE)
        found.append(Design("symbola", outline, False, font_characters(symbola)))
    return found


def build_emoji(
    out: Path,
    labeled_fraction: float,
    seed: int,
    emoji_test: Path = EMOJI_TEST,
    noto: Path = NOTO,
    symbola: Path | None = SYMBOLA,
) -> dict:
    """Write the emoji image-caption set under ``out`` (``pretrain/`` and ``labeled/``); return its manifest entry.

    Raises:
        MissingEmojiData: no emoji list or no colour emoji font, or fewer than two groups in the list.
    """
    if not emoji_test.is_file():
        raise MissingEmojiData(f"{emoji_test}: Unicode's emoji list is not installed; {INSTALL_HINT}")
    emoji = list(parse_emoji_test(emoji_test.read_text(encoding="utf-8").splitlines()))
    classes = sorted({e.category for e in emoji})
    if len(classes) < 2:
        raise MissingEmojiData(f"{emoji_test}: found {len(classes)} emoji group(s), need 2")
    fonts = designs(noto, symbola)
    pretrain, labeled = split_groups([e.group for e in emoji], labeled_fraction, seed)
    side_of = {**dict.fromkeys(pretrain, "pretrain"), **dict.fromkeys(labeled, "labeled")}
    numbers: dict[str, int] = defaultdict(int)
    records, per_design = [], defaultdict(int)
    for item in emoji:
        side, label = side_of[item.group], slug(item.category)
        for design in (d for d in fonts if d.draws(item)):
            target = out / side / label / sample_file_name(item.group, numbers[item.group], "png")
            numbers[item.group] += 1
            target.parent.mkdir(parents=True, exist_ok=True)
            design.render(item, CANVAS).save(target)
            target.with_suffix(".txt").write_text(item.caption + "\n")
            records.append((side, label, item.group))
            per_design[design.name] += 1
    return {
        "modality": "image_text",
        # the image recipes read the same folders (the folder source takes the pictures, not the captions)
        "also_for": ["image"],
        "classes": sorted({slug(c) for c in classes}),
        "group": "emoji name without the words that say who (man / woman / person ...)",
        "image_size": CANVAS,
        "layout": "<side>/<unicode group>/<name>__<n>.png with <name>__<n>.txt (the caption) beside",
        "group_pattern": FOLDER_GROUP_PATTERN,
        "emoji_list": str(emoji_test),
        "designs": dict(sorted(per_design.items())),
        "sides": describe_sides(records),
    }
