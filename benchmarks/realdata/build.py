"""Build the real-data evaluation sets: ``python benchmarks/realdata/build.py --out DIR``.

Writes one folder per set under DIR (``audio/``, ``image/``, ``text/``, ``tabular/``,
``tabular_diabetes/``, ``tabular_pendigits/``, ``image_text/``, ``image_text_emoji/``), each
with a *pretrain* side (what a recipe trains on, labels unused) and a *labeled* side (what the
evaluation probes, split again by group so test groups are unseen), and ``manifest.json`` with
the sizes, groups and how each format encodes its group. See README.md beside this file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_audio import MissingTool, build_audio  # noqa: E402
from build_emoji import EMOJI_TEST, MissingEmojiData, build_emoji  # noqa: E402
from build_icons import THEME as ICON_THEME
from build_icons import MissingIconTheme, build_icons  # noqa: E402
from build_images import MissingFonts, build_images  # noqa: E402
from build_tables import FILE_TABLES, TABLES, MissingTableFiles, build_tables  # noqa: E402
from build_text import PRETRAIN_CORPORA, MissingPackageLists, build_text  # noqa: E402

#: the sets, each in a folder of its name; a set not named after its modality (the tables, the emoji)
#: says its modality in its manifest entry.
SETS = ("audio", "image", "text", *TABLES, "image_text", "image_text_emoji")
MISSING = (MissingTool, MissingFonts, MissingPackageLists, MissingIconTheme, MissingTableFiles, MissingEmojiData)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder to write the sets into")
    parser.add_argument(
        "--only",
        default=None,
        help=f"comma-separated subset of {','.join(SETS)} (default: all; a file table only with its folder)",
    )
    parser.add_argument("--labeled-fraction", type=float, default=0.4, help="share of groups on the labeled side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clips-per-word", type=int, default=4, help="audio: clips of each word per voice")
    parser.add_argument("--max-voices", type=int, default=None, help="audio: only the first N voices (tests)")
    parser.add_argument("--per-letter", type=int, default=2, help="image: renderings of each letter per font file")
    parser.add_argument("--files-per-design", type=int, default=8, help="image: font files per typeface design")
    parser.add_argument("--texts-per-class", type=int, default=500, help="text: synopses per section at most")
    parser.add_argument(
        "--text-pretrain",
        choices=PRETRAIN_CORPORA,
        default="all",
        help="text: pretrain on every other synopsis in the lists (all) or only the labeled sections' (sections)",
    )
    parser.add_argument("--icon-theme", type=Path, default=ICON_THEME, help="image_text: the Adwaita icon theme folder")
    parser.add_argument(
        "--emoji-list", type=Path, default=EMOJI_TEST, help="image_text_emoji: Unicode's emoji-test.txt"
    )
    parser.add_argument(
        "--pendigits", type=Path, default=None, help="tabular_pendigits: folder with UCI's pendigits.tra and .tes"
    )
    parser.add_argument(
        "--skip-missing", action="store_true", help="skip a set whose tool or data is missing instead of failing"
    )
    args = parser.parse_args(argv)
    if args.only is None:  # every set whose source is on the machine or named
        args.only = ",".join(s for s in SETS if s not in FILE_TABLES or args.pendigits is not None)
    args.only = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = sorted(set(args.only) - set(SETS))
    if unknown:
        parser.error(f"--only: unknown set {', '.join(unknown)} (choose from {', '.join(SETS)})")
    return args


def build_one(name: str, folder: Path, args: argparse.Namespace) -> dict:
    """Build one set into ``folder`` (emptied first) and return its manifest entry."""
    if folder.exists():
        shutil.rmtree(folder)
    fraction, seed = args.labeled_fraction, args.seed
    if name == "audio":
        return build_audio(folder, args.clips_per_word, fraction, seed, args.max_voices)
    if name == "image":
        return build_images(folder, args.per_letter, fraction, seed, args.files_per_design)
    if name == "text":
        return build_text(folder, args.texts_per_class, fraction, seed, pretrain_corpus=args.text_pretrain)
    if name == "image_text":
        return build_icons(folder, fraction, seed, args.icon_theme)
    if name == "image_text_emoji":
        return build_emoji(folder, fraction, seed, emoji_test=args.emoji_list)
    return build_tables(folder, fraction, seed, name, files=args.pendigits)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"sets": {}}
    failed = []
    for name in args.only:
        started = time.perf_counter()
        try:
            entry = build_one(name, args.out / name, args)
        except MISSING as error:
            print(f"{name}: {'skipped' if args.skip_missing else 'FAILED'}: {error}", file=sys.stderr)
            manifest["sets"].pop(name, None)
            failed += [] if args.skip_missing else [name]
            continue
        entry["build_seconds"] = round(time.perf_counter() - started, 1)
        manifest["sets"][name] = entry
        sides = ", ".join(
            f"{s} {c['samples']} samples / {c['groups'] or 'no'} groups" for s, c in entry["sides"].items()
        )
        print(f"{name}: {sides} ({entry['build_seconds']} s)")
    manifest.update(
        {
            "built": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "seed": args.seed,
            "labeled_fraction": args.labeled_fraction,
        }
    )
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
