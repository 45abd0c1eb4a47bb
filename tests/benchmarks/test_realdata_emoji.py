"""The emoji image-caption set of the real-data suite (benchmarks/realdata/build_emoji.py).

The real set needs Debian's emoji fonts and Unicode's emoji list; these tests write a small list
in the format of ``emoji-test.txt`` and draw it with DejaVu Sans (installed with any font set),
standing in for both designs, so they run on a bare machine.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REALDATA = Path(__file__).resolve().parents[2] / "benchmarks" / "realdata"
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

EMOJI_LIST = """\
# group: Smileys & Emotion
# subgroup: face-smiling
263A FE0F                                              ; fully-qualified     # ☺️ E0.6 smiling face
263A                                                   ; unqualified         # ☺ E0.6 smiling face
2639 FE0F                                              ; fully-qualified     # ☹️ E0.7 frowning face
# subgroup: heart
2665 FE0F                                              ; fully-qualified     # ♥️ E0.6 heart suit
# group: People & Body
# subgroup: person-role
1F9D1 200D 1F373                                       ; fully-qualified     # 🧑‍🍳 E12.1 cook
1F468 200D 1F373                                       ; fully-qualified     # 👨‍🍳 E4.0 man cook
1F468 1F3FB 200D 1F373                                 ; fully-qualified     # 👨🏻‍🍳 E4.0 man cook: light skin tone
1F469 200D 1F373                                       ; fully-qualified     # 👩‍🍳 E4.0 woman cook
270C FE0F                                              ; fully-qualified     # ✌️ E0.6 victory hand
261D FE0F                                              ; fully-qualified     # ☝️ E0.6 index pointing up
# group: Component
# subgroup: skin-tone
1F3FB                                                  ; component           # 🏻 E1.0 light skin tone
# group: Symbols
# subgroup: zodiac
2648                                                   ; fully-qualified     # ♈ E0.6 Aries
2649                                                   ; fully-qualified     # ♉ E0.6 Taurus
264A                                                   ; fully-qualified     # ♊ E0.6 Gemini
"""


@pytest.fixture(autouse=True)
def realdata_path(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(REALDATA))


@pytest.fixture
def emoji_list(tmp_path: Path) -> Path:
    path = tmp_path / "emoji-test.txt"
    path.write_text(EMOJI_LIST, encoding="utf-8")
    return path


def test_the_list_keeps_fully_qualified_emoji_without_skin_tones_or_components():
    from build_emoji import parse_emoji_test

    emoji = list(parse_emoji_test(EMOJI_LIST.splitlines()))
    assert [e.name for e in emoji] == [
        "smiling face", "frowning face", "heart suit", "cook", "man cook", "woman cook", "victory hand",
        "index pointing up", "Aries", "Taurus", "Gemini",
    ]  # fmt: skip
    assert {e.category for e in emoji} == {"Smileys & Emotion", "People & Body", "Symbols"}
    by_name = {e.name: e for e in emoji}
    # who is shown is not what: the three cooks are one group, so none is on both sides of a split
    assert {by_name[n].group for n in ("cook", "man cook", "woman cook")} == {"cook"}
    assert by_name["woman cook"].caption == "woman cook" and by_name["Aries"].caption == "aries"
    assert by_name["smiling face"].single_character == 0x263A and by_name["cook"].single_character is None


@pytest.mark.skipif(not DEJAVU.is_file(), reason=f"{DEJAVU} is not installed")
def test_the_builder_draws_each_emoji_in_each_design_that_has_it_and_splits_by_group(tmp_path: Path, emoji_list):
    from build_emoji import build_emoji
    from PIL import Image

    entry = build_emoji(tmp_path / "set", 0.4, 0, emoji_test=emoji_list, noto=DEJAVU, symbola=DEJAVU)
    assert entry["modality"] == "image_text"
    assert entry["classes"] == ["people-body", "smileys-emotion", "symbols"]
    # the colour design draws all 11; the outline one only single characters in its character map
    # (DejaVu Sans has the faces, the suit, the hands and the zodiac signs: 8 of them)
    assert entry["designs"] == {"noto": 11, "symbola": 8}
    files = {side: sorted((tmp_path / "set" / side).rglob("*.png")) for side in ("pretrain", "labeled")}
    groups = {}
    for side, paths in files.items():
        groups[side] = {
            re.match(entry["group_pattern"], p.relative_to(tmp_path / "set" / side).as_posix())["group"] for p in paths
        }
    assert not groups["pretrain"] & groups["labeled"]
    assert groups["pretrain"] | groups["labeled"] == {
        "smiling-face", "frowning-face", "heart-suit", "cook", "victory-hand", "index-pointing-up", "aries",
        "taurus", "gemini",
    }  # fmt: skip
    cooks = [p for paths in files.values() for p in paths if p.name.startswith("cook__")]
    assert len(cooks) == 3 and {p.parent.name for p in cooks} == {"people-body"}
    assert {p.with_suffix(".txt").read_text().strip() for p in cooks} == {"cook", "man cook", "woman cook"}
    for path in files["labeled"] + files["pretrain"]:
        with Image.open(path) as image:
            pixels = np.asarray(image)
        assert image.size == (32, 32) and image.mode == "RGB"
        assert tuple(pixels[0, 0]) == (255, 255, 255) and pixels.min() < 128  # ink, centred on white


def test_a_missing_font_or_list_names_the_packages_and_the_build_command_skips_it(tmp_path: Path, emoji_list):
    from build_emoji import MissingEmojiData, build_emoji

    with pytest.raises(MissingEmojiData, match="apt-get install -y unicode-data fonts-noto-color-emoji"):
        build_emoji(tmp_path / "a", 0.4, 0, emoji_test=tmp_path / "none.txt")
    with pytest.raises(MissingEmojiData, match="colour emoji font is not installed"):
        build_emoji(tmp_path / "b", 0.4, 0, emoji_test=emoji_list, noto=tmp_path / "none.ttf")
    base = [sys.executable, str(REALDATA / "build.py"), "--out", str(tmp_path / "out"), "--only", "image_text_emoji"]
    base += ["--emoji-list", str(tmp_path / "none.txt")]
    failed = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "image_text_emoji: FAILED" in failed.stderr
    skipped = subprocess.run([*base, "--skip-missing"], capture_output=True, text=True, timeout=120)
    assert (
        skipped.returncode == 0 and "image_text_emoji: skipped" in skipped.stderr and "unicode-data" in skipped.stderr
    )


def test_the_runner_runs_image_text_and_image_recipes_on_the_emoji_set():
    import run

    pattern = r"^[^/]+/(?P<group>[^/]+)__\d+\.[a-z0-9]+$"
    sets = {
        "image": {"group_pattern": pattern},
        "image_text": {"modality": "image_text", "group_pattern": pattern},
        "image_text_emoji": {"modality": "image_text", "also_for": ["image"], "group_pattern": pattern},
        "tabular_diabetes": {"modality": "tabular"},
    }
    assert run.sets_for("image", sets) == ["image", "image_text_emoji"]
    assert run.sets_for("image_text", sets) == ["image_text", "image_text_emoji"]
    assert run.sets_for("tabular", sets) == ["tabular_diabetes"] and run.sets_for("audio", sets) == []
    assert run.run_name(Path("recipes/image_simclr.yaml"), "image", "image_text_emoji", 1) == (
        "image_simclr@image_text_emoji-seed1"
    )
