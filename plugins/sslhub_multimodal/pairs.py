"""Where image-caption pairs come from, and the dataset that serves them.

Three sources:

- the embedded default: scikit-learn's 1797 handwritten digits, each with an honest caption
  built from its label (:mod:`sslhub_multimodal.captions`); no download;
- a folder: every image file with a caption file of the same stem beside it
  (``cat.png`` + ``cat.txt``); first-level subfolders, when every image is in one, are classes;
- a ``.jsonl`` file: one ``{"image": path, "caption": text}`` object per line (paths relative
  to the file's folder), optionally with a label field.

All three give a :class:`PairCollection`: images (an in-memory array or file paths),
captions and optional labels, indexed alike. The images and captions become samples through
the ``image`` and ``text`` modalities, built as parts (:meth:`sslhub.BuildContext.part`):
this module imports no other plugin. Decoding is per sample, deterministic and picklable; a
file that fails to decode at read time is replaced by the next *pair* (image and caption
together), so a caption never ends up beside the wrong picture.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from sslhub import folder_classes, folder_fingerprint, holdout_split, list_files
from sslhub_multimodal.captions import DIGIT_WORDS, EVAL_TEMPLATES, TRAIN_TEMPLATES, digit_captions

logger = logging.getLogger("sslhub")

#: how many following pairs a dataset tries when an image fails to decode at read time.
DECODE_RETRIES = 8

#: image file extensions of the folder source by default.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

#: how many skipped paths a warning names before it only counts them.
NAMED_SKIPS = 5


@dataclass
class PairCollection:
    """Every pair of a source, before the train/test split.

    Attributes:
        images: ``[N, H, W]`` pixel values in ``0..255`` (embedded data; the image part resizes
            them), or ``None``.
        paths: image files (folder and jsonl sources), or ``None``.
        captions: ``N`` caption strings.
        labels: int64 ``[N]`` class indices, or ``None``.
        class_names: names of the classes (empty without labels).
        fingerprint: a short string identifying the data.
        split: precomputed ``(train, test)`` indices, or ``None`` to split by ``eval_fraction``.
    """

    images: np.ndarray | None
    paths: list[Path] | None
    captions: list[str]
    labels: np.ndarray | None
    class_names: list[str]
    fingerprint: str
    split: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.captions)


def digit_pairs(eval_fraction: float, split_seed: int) -> PairCollection:
    """scikit-learn's bundled 8x8 digits (no download) with template captions: training templates
    for the train split, the reserved :data:`EVAL_TEMPLATES` for the held-out split.

    The images are float ``[1797, 8, 8]`` in ``0..255`` (``0..16`` scaled), left for the image
    part to upsample in one call (and round once).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images * (255.0 / 16.0), digits.target.astype(np.int64)
    train, test = holdout_split(len(labels), labels, eval_fraction, split_seed)
    captions = [""] * len(labels)
    for indices, templates, offset in ((train, TRAIN_TEMPLATES, 0), (test, EVAL_TEMPLATES, 1)):
        for index, caption in zip(
            indices, digit_captions(labels[indices], templates, split_seed + offset), strict=True
        ):
            captions[int(index)] = caption
    return PairCollection(
        images=images,
        paths=None,
        captions=captions,
        labels=labels,
        class_names=list(DIGIT_WORDS),
        fingerprint=f"sklearn-digits-captions:{len(labels)}:{_hash_texts(captions)}",
        split=(train, test),
    )


def folder_pairs(root: Path, extensions: Sequence[str], caption_extension: str = ".txt") -> PairCollection:
    """Images under ``root`` with a same-stem caption file beside each; images without one are skipped.

    First-level subfolders, when every image is in one, are classes.

    Raises:
        ValueError: ``root`` is not a folder, holds no readable image, or no image has a readable,
            non-empty caption.
    """
    paths = _readable_images(root, extensions)
    labels, class_names = folder_classes(root, paths)
    kept_paths: list[Path] = []
    kept_labels: list[int] = []
    captions: list[str] = []
    missing: list[Path] = []
    for position, path in enumerate(paths):
        caption_file = path.with_suffix(caption_extension)
        caption = _read_caption(caption_file)
        if caption is None:
            missing.append(path)
            continue
        kept_paths.append(path)
        captions.append(caption)
        if labels is not None:
            kept_labels.append(labels[position])
    if missing:
        named = ", ".join(str(p) for p in missing[:NAMED_SKIPS])
        more = f" and {len(missing) - NAMED_SKIPS} more" if len(missing) > NAMED_SKIPS else ""
        logger.warning(
            "image_text: skipped %d image(s) under %s without a non-empty %s caption beside them: %s%s",
            len(missing),
            root,
            caption_extension,
            named,
            more,
        )
    if not kept_paths:
        raise ValueError(
            f"folder source: none of the {len(paths)} images under {root} has a caption file "
            f"(same name, {caption_extension} extension) beside it"
        )
    return PairCollection(
        images=None,
        paths=kept_paths,
        captions=captions,
        labels=np.asarray(kept_labels, dtype=np.int64) if labels is not None else None,
        class_names=class_names if labels is not None else [],
        fingerprint=f"folder:{root}:{len(kept_paths)}:{folder_fingerprint(root, kept_paths)}",
    )


def jsonl_pairs(
    path: Path, image_field: str = "image", caption_field: str = "caption", label_field: str | None = None
) -> PairCollection:
    """Pairs listed in a JSON-lines file; bad lines (invalid JSON, missing fields or files,
    unreadable images) are skipped and counted in one warning.

    Raises:
        ValueError: the file does not exist or holds no usable pair.
    """
    if not path.is_file():
        raise ValueError(f"jsonl source: file {path} does not exist")
    fields = (image_field, caption_field, label_field)
    kept: list[tuple[Path, str, str | None]] = []
    problems: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        pair = _jsonl_pair(line, path.parent, *fields)
        if isinstance(pair, str):
            problems[pair] = problems.get(pair, 0) + 1
        else:
            kept.append(pair)
    if problems:
        logger.warning(
            "image_text: skipped %d line(s) of %s (%s)",
            sum(problems.values()),
            path,
            ", ".join(f"{count} {reason}" for reason, count in problems.items()),
        )
    if not kept:
        raise ValueError(f"jsonl source: no usable pairs in {path} (fields {image_field!r} and {caption_field!r})")
    labels, class_names = None, []
    if label_field is not None:
        class_names = sorted({label for _, _, label in kept if label is not None})
        index = {name: i for i, name in enumerate(class_names)}
        labels = np.asarray([index[label] for _, _, label in kept if label is not None], dtype=np.int64)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return PairCollection(
        images=None,
        paths=[file for file, _, _ in kept],
        captions=[caption for _, caption, _ in kept],
        labels=labels,
        class_names=class_names,
        fingerprint=f"jsonl:{path}:{len(kept)}:{digest}",
    )


def _jsonl_pair(
    line: str, base: Path, image_field: str, caption_field: str, label_field: str | None
) -> tuple[Path, str, str | None] | str:
    """One JSON line as (image file, caption, label or None), or the reason it is skipped."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return "invalid JSON"
    if not isinstance(record, dict):
        return "not a JSON object"
    image, caption = record.get(image_field), record.get(caption_field)
    if not isinstance(image, str) or not isinstance(caption, str) or not caption.strip():
        return f"no {image_field!r} path or no non-empty {caption_field!r} text"
    if label_field is not None and record.get(label_field) is None:
        return f"no {label_field!r}"
    file = Path(image).expanduser()
    file = file if file.is_absolute() else base / file
    if not _readable_image(file):
        return "missing or unreadable image file"
    return file, caption.strip(), str(record[label_field]) if label_field is not None else None


def _readable_images(root: Path, extensions: Sequence[str]) -> list[Path]:
    """Image files under ``root`` whose header Pillow accepts; the others are counted in one warning."""
    candidates = list_files(root, extensions)
    readable = [_readable_image(path) for path in candidates]
    paths = [path for path, ok in zip(candidates, readable, strict=True) if ok]
    skipped = [path for path, ok in zip(candidates, readable, strict=True) if not ok]
    if skipped:
        named = ", ".join(str(p) for p in skipped[:NAMED_SKIPS])
        more = f" and {len(skipped) - NAMED_SKIPS} more" if len(skipped) > NAMED_SKIPS else ""
        logger.warning("skipped %d unreadable image file(s) under %s: %s%s", len(skipped), root, named, more)
    if not paths:
        wanted = sorted({e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions})
        raise ValueError(
            f"folder source: no readable images with extensions {wanted} under {root}"
            + (f" ({len(skipped)} unreadable)" if skipped else "")
        )
    return paths


def _read_caption(file: Path) -> str | None:
    try:
        text = file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    # several lines are joined: a caption is one sentence-like string
    return " ".join(text.split()) or None


def _readable_image(file: Path) -> bool:
    try:
        with Image.open(file) as img:
            img.verify()
    except Exception:  # noqa: BLE001 - Pillow raises many kinds for bad files; all mean "skip"
        return False
    return True


def _hash_texts(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()[:12]


class PairDataset(Dataset):
    """Image-caption pairs: ``{"image": uint8 [C, S, S], "input_ids": int64 [L], "attention_mask": int64 [L]}``.

    With ``labels``, samples also carry ``"label"`` (int64 scalar).

    Args:
        images: the image part's samples of this split (:meth:`sslhub.Modality.part_dataset`),
            in the same order as ``texts``; one that fails to decode raises.
        texts: the text part's samples of this split's captions.
        labels: int64 ``[N]`` class per pair, or ``None``.
        names: what each image is (its file), for warnings; ``None`` for in-memory images.
    """

    def __init__(
        self,
        images: Dataset,
        texts: Dataset,
        labels: np.ndarray | None = None,
        names: Sequence[str] | None = None,
    ):
        if len(images) != len(texts):  # type: ignore[arg-type]
            raise ValueError(f"{len(images)} images but {len(texts)} captions: pairs must line up")  # type: ignore[arg-type]
        if labels is not None and len(labels) != len(texts):  # type: ignore[arg-type]
            raise ValueError(f"{len(labels)} labels for {len(texts)} pairs")  # type: ignore[arg-type]
        self.images = images
        self.texts = texts
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.names = None if names is None else [str(n) for n in names]

    def __len__(self) -> int:
        return len(self.texts)  # type: ignore[arg-type]

    def _name(self, index: int) -> str:
        return self.names[index] if self.names is not None else f"image {index}"

    def _image(self, index: int) -> tuple[int, dict[str, Tensor]]:
        """The image sample of pair ``index``, or of the next decodable pair (and that pair's index)."""
        for attempt in range(min(DECODE_RETRIES, len(self))):
            current = (index + attempt) % len(self)
            try:
                return current, self.images[current]
            except (OSError, ValueError) as exc:
                logger.warning("skipping unreadable image %s (%s); using the next pair", self._name(current), exc)
        raise RuntimeError(
            f"{DECODE_RETRIES} consecutive images starting at {self._name(index)} failed to decode; "
            "check the image files"
        )

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} pairs")
        index, image = self._image(index)
        sample = {**image, **self.texts[index]}
        if self.labels is not None:
            sample["label"] = torch.tensor(int(self.labels[index]), dtype=torch.int64)
        return sample
