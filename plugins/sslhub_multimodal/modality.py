"""The ``image_text`` modality: image-caption pairs for one image and one text encoder.

Samples:
    ``{"image": uint8 [C, S, S], "input_ids": int64 [L], "attention_mask": int64 [L]}`` with
    ``L <= max_length`` (``[CLS] caption [SEP]``), plus ``"label"`` (int64 scalar) on the
    labeled eval split.
Batches after :meth:`ImageTextModality.collate` and :meth:`ImageTextModality.on_device`:
    ``{"image": float32 [B, C, S, S] in [0, 1], "input_ids": int64 [B, L_max],
    "attention_mask": int64 [B, L_max], "caption_key": int64 [B]}`` (captions right-padded
    with the pad id; ``caption_key`` identifies each caption as written, before caption
    augmentations such as ``token_dropout`` change its ids).

A composite modality: its image side *is* the registered ``image`` modality and its text side
the registered ``text`` modality, each built by name through the build context
(:meth:`sslhub.BuildContext.part`) with the parameters :meth:`ImageTextParams.part_params`
maps onto them. So normalisation stays inside the image encoders (image augmentations such as
``random_resized_crop`` apply to ``batch["image"]`` and leave the text alone), the tokenizer is
the text modality's, trained on the training captions, and ``info()`` merges the facts of both,
so ``small_cnn``/``timm`` and ``hf`` build from it. Nothing here imports another plugin:
``-p no:vision`` leaves image_text without its image part, which recipe validation reports.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch.utils.data import Dataset, Subset

from sslhub import (
    Batch,
    BuildContext,
    EvalSplit,
    GroupPattern,
    Modality,
    ModalityInfo,
    Params,
    holdout_split,
    path_group_problems,
    path_problems,
    split_by_path_groups,
)
from sslhub_multimodal.losses.clip import CAPTION_KEY, caption_keys
from sslhub_multimodal.pairs import (
    IMAGE_EXTENSIONS,
    PairCollection,
    PairDataset,
    digit_pairs,
    folder_pairs,
    jsonl_pairs,
)

#: ``(field path, message)`` pairs, as :meth:`sslhub.Params.file_problems` returns them.
FieldProblems = list[tuple[tuple[str | int, ...], str]]

#: the parts of every batch, by registered modality name (also the encoder keys of ``clip``).
PARTS = ("image", "text")


class DefaultPairSource(Params):
    """The embedded pairs: scikit-learn's handwritten digits with captions built from their labels."""

    type: Literal["default"] = "default"


class FolderPairSource(Params):
    """Image files with a same-stem caption file beside each (``a.png`` + ``a.txt``)."""

    type: Literal["folder"] = "folder"
    path: Path = Field(description="root folder, searched recursively; first-level subfolders are classes")
    extensions: list[str] = Field(
        default_factory=lambda: list(IMAGE_EXTENSIONS), min_length=1, description="image file extensions"
    )
    caption_extension: str = Field(".txt", pattern=r"^\.\w+$", description="extension of the caption files")
    group_pattern: GroupPattern = Field(
        None,
        description="regex over each image's path relative to path; its (?P<group>...) (or first group) names the "
        "pair's group: the labeled split keeps groups apart, so test groups are unseen",
    )

    def file_problems(
        self, test_fraction: float | None = None, seed: int = 0, min_train_per_class: int = 1
    ) -> FieldProblems:
        """A missing or imageless folder, no captioned image, a group pattern leaving a pair without a
        group, or a class without probe-train pairs (the pairs the split sees: images with a caption)."""
        missing = path_problems(self.path, "folder", self.extensions)
        if missing or self.group_pattern is None or test_fraction is None:
            return missing
        root = self.path.expanduser()
        try:
            pairs = folder_pairs(root, self.extensions, self.caption_extension)
        except ValueError as error:
            return [(("path",), str(error))]
        relative = [path.relative_to(root).as_posix() for path in pairs.paths or []]
        labels = None if pairs.labels is None else [int(label) for label in pairs.labels]
        return path_group_problems(
            relative,
            labels,
            pairs.class_names,
            self.group_pattern,
            str(root),
            test_fraction,
            seed,
            min_train_per_class=min_train_per_class,
        )


class JsonlPairSource(Params):
    """A ``.jsonl`` file of ``{"image": path, "caption": text}`` lines (paths relative to the file)."""

    type: Literal["jsonl"] = "jsonl"
    path: Path = Field(description="the .jsonl file")
    image_field: str = Field("image", min_length=1, description="key of the image path")
    caption_field: str = Field("caption", min_length=1, description="key of the caption text")
    label_field: str | None = Field(None, description="key of a class label; enables the labeled eval split")

    def file_problems(
        self, test_fraction: float | None = None, seed: int = 0, min_train_per_class: int = 1
    ) -> FieldProblems:
        """A missing or empty file."""
        return path_problems(self.path, "file")


PairSource = Annotated[DefaultPairSource | FolderPairSource | JsonlPairSource, Field(discriminator="type")]


class TrainCaptionTokenizer(Params):
    """Train the text part's tokenizer on the training captions (never on held-out ones)."""

    type: Literal["train"] = "train"
    vocab_size: int = Field(4000, ge=64, le=1_000_000, description="Vocabulary size including special tokens.")
    lowercase: bool = Field(True, description="Lowercase and strip accents before tokenizing.")
    algorithm: Literal["wordpiece", "bpe"] = Field("wordpiece", description="Subword algorithm.")
    min_frequency: int = Field(2, ge=1, description="Minimum count for a vocabulary entry or merge.")


class LocalCaptionTokenizer(Params):
    """Load an existing ``tokenizer.json`` (HF ``tokenizers`` format) for the text part."""

    type: Literal["local"] = "local"
    path: str = Field(description="A tokenizer.json file or a folder containing one.")


class ImageTextParams(Params):
    """Parameters of the ``image_text`` modality (everything under ``data:`` but ``modality``).

    ``image_size``, ``channels``, ``mean`` and ``std`` go to the image part, ``max_length`` and
    ``tokenizer`` to the text part (:meth:`part_params`); each part checks its own values.
    """

    source: PairSource = Field(
        default_factory=DefaultPairSource, description="where pairs come from: type default | folder | jsonl"
    )
    image_size: int = Field(32, ge=8, le=2048, description="side length S images are resized/cropped to")
    channels: Literal[1, 3] = Field(3, description="3 for RGB (gray images are replicated), 1 for gray")
    mean: tuple[float, ...] | None = Field(None, description="image normalisation mean (inside the image encoder)")
    std: tuple[float, ...] | None = Field(None, description="image normalisation std (inside the image encoder)")
    max_length: int = Field(32, ge=4, le=4096, description="maximum caption tokens, [CLS] and [SEP] included")
    eval_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="share of pairs held out for retrieval and the eval test split"
    )
    split_seed: int = Field(0, description="seed of the deterministic train/test split (and digit caption draw)")
    tokenizer: Annotated[TrainCaptionTokenizer | LocalCaptionTokenizer, Field(discriminator="type")] = Field(
        default_factory=lambda: TrainCaptionTokenizer(vocab_size=1000, min_frequency=1),
        description="{type: train, vocab_size, ...} trains on the training captions; {type: local, path} loads one",
    )

    def file_problems(
        self, test_fraction: float | None = None, seed: int = 0, min_train_per_class: int = 1
    ) -> FieldProblems:
        """The source's problems with this recipe's ``eval_fraction`` and ``split_seed`` (the default digits have none)."""
        if isinstance(self.source, DefaultPairSource):
            return []
        problems = self.source.file_problems(self.eval_fraction, self.split_seed, min_train_per_class)
        return [(("source", *path), message) for path, message in problems]

    @model_validator(mode="after")
    def _grouping_needs_a_held_out_part(self) -> ImageTextParams:
        if isinstance(self.source, FolderPairSource) and self.source.group_pattern and self.eval_fraction == 0:
            raise ValueError("source.group_pattern groups the labeled split, so eval_fraction must be above 0")
        return self

    def part_params(self) -> dict[str, dict[str, Any]]:
        """``image``: ``image_size``, ``channels``, ``mean``, ``std``; ``text``: ``max_length``, ``tokenizer``."""
        image: dict[str, Any] = {"image_size": self.image_size, "channels": self.channels}
        image.update({name: list(getattr(self, name)) for name in ("mean", "std") if getattr(self, name) is not None})
        return {"image": image, "text": {"max_length": self.max_length, "tokenizer": self.tokenizer.model_dump()}}


def split_pairs(
    pairs: PairCollection, source: Params, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, int] | None]:
    """``(train, test)`` pair indices and the group counts per side (``None`` when not grouped).

    Grouped when ``source`` is a folder with a ``group_pattern`` over labeled pairs (whole groups
    on one side, see :func:`sslhub.split_by_path_groups`); otherwise stratified by label.
    """
    pattern = getattr(source, "group_pattern", None)
    if pattern is None or fraction == 0 or pairs.paths is None:
        train, test = holdout_split(len(pairs), pairs.labels, fraction, seed)
        return train, test, None
    root = Path(source.path).expanduser()  # type: ignore[attr-defined]
    relative = [path.relative_to(root).as_posix() for path in pairs.paths]
    labels = None if pairs.labels is None else [int(label) for label in pairs.labels]
    split = split_by_path_groups(relative, labels, pairs.class_names, pattern, str(root), fraction, seed)
    return np.asarray(split.train, dtype=np.int64), np.asarray(split.test, dtype=np.int64), split.group_counts()


class ImageTextModality(Modality):
    """Image-caption pairs from the embedded digits, a folder of pairs or a ``.jsonl`` list.

    The data are split once, deterministically (``split_seed``; stratified when there are
    labels): ``train_dataset`` is the training pairs; ``held_out_dataset`` the ``eval_fraction``
    held out (for retrieval); ``eval_split`` the same two parts with labels (digit class for
    the default data) so kNN and linear probes run per encoder.

    Args:
        params: :class:`ImageTextParams`.
        context: the build context, which builds the ``image`` and ``text`` parts from the run's
            plugins; ``None``: from the installed plugins.

    """

    input_names = ("image", "input_ids", "attention_mask")

    def __init__(self, params: ImageTextParams | None = None, context: BuildContext | None = None):
        self.params = params or ImageTextParams()
        context = context or BuildContext()
        context = replace(context, modality_name=context.modality_name or "image_text")
        given = self.params.part_params()
        self._parts: dict[str, Modality] = {name: context.part(name, given[name]) for name in PARTS}
        self._pairs: PairCollection | None = None
        self._groups: dict[str, int] | None = None
        self._train_idx: np.ndarray | None = None
        self._test_idx: np.ndarray | None = None
        self._images: Dataset | None = None
        self._texts: dict[str, Dataset] = {}

    # ----------------------------------------------------------------- data
    def _load_pairs(self) -> PairCollection:
        if self._pairs is not None:
            return self._pairs
        params, source = self.params, self.params.source
        if isinstance(source, FolderPairSource | JsonlPairSource):
            pairs = self._read_source(source)
        else:
            pairs = digit_pairs(params.eval_fraction, params.split_seed)
        if pairs.split is not None:
            train, test = pairs.split
        else:
            train, test, self._groups = split_pairs(pairs, source, params.eval_fraction, params.split_seed)
        if len(train) == 0:
            raise ValueError(f"image_text: all {len(pairs)} pairs fell into the held-out part; lower eval_fraction")
        self._pairs, self._train_idx, self._test_idx = pairs, train, test
        return pairs

    @staticmethod
    def _read_source(source: FolderPairSource | JsonlPairSource) -> PairCollection:
        if isinstance(source, FolderPairSource):
            return folder_pairs(source.path.expanduser(), source.extensions, source.caption_extension)
        return jsonl_pairs(source.path.expanduser(), source.image_field, source.caption_field, source.label_field)

    def prepare(self, run_dir: Path | None) -> None:
        """Load the pairs, fit the text part on the training captions, tokenize all captions.

        The text part trains its tokenizer on the training captions only (held-out captions stay
        unseen: their phrasings are part of what is evaluated); with a ``run_dir`` it saves it
        there as ``tokenizer.json`` and reuses one already there (a resumed run).
        """
        pairs = self._load_pairs()
        self.parts["text"].fit_part(self.captions("train"), run_dir)
        self.parts["image"].fit_part(self._image_items(), run_dir)
        if not self._texts:
            self._texts = {part: self.parts["text"].part_dataset(self.captions(part)) for part in ("train", "test")}
        if self._images is None:
            self._images = self.parts["image"].part_dataset(self._image_items())
        assert pairs is self._pairs

    def _image_items(self) -> Any:
        pairs = self._load_pairs()
        return pairs.images if pairs.images is not None else pairs.paths

    def _ensure_prepared(self) -> None:
        if not self._texts:
            self.prepare(None)

    def tokenize(self, texts: list[str]) -> Batch:
        """Tokenize and pad free texts (zero-shot prompts) like captions.

        Returns:
            ``input_ids``/``attention_mask``: int64 ``[len(texts), L_max]`` on the CPU.
        """
        self._ensure_prepared()
        if not texts:
            raise ValueError("tokenize needs at least one text")
        text = self.parts["text"]
        sequences = text.part_dataset(list(texts))
        return text.collate([sequences[i] for i in range(len(texts))])

    def _dataset(self, part: str, with_labels: bool) -> PairDataset:
        self._ensure_prepared()
        pairs = self._pairs
        assert pairs is not None and self._images is not None
        indices = self._train_idx if part == "train" else self._test_idx
        assert indices is not None
        names = [str(pairs.paths[i]) for i in indices] if pairs.paths is not None else None
        labels = pairs.labels[indices] if with_labels and pairs.labels is not None else None
        images = Subset(self._images, [int(i) for i in indices])
        return PairDataset(images, self._texts[part], labels, names)

    def captions(self, part: Literal["train", "test"] = "test") -> list[str]:
        """The caption strings of the training or held-out pairs, in dataset order."""
        pairs = self._load_pairs()
        indices = self._train_idx if part == "train" else self._test_idx
        assert indices is not None
        return [pairs.captions[i] for i in indices]

    # ----------------------------------------------------------------- Modality API
    @property
    def parts(self) -> dict[str, Modality]:
        """The ``image`` and ``text`` part modalities."""
        return self._parts

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self._load_pairs().class_names)

    def train_dataset(self) -> Dataset:
        """Training pairs ``{"image", "input_ids", "attention_mask"}``."""
        return self._dataset("train", with_labels=False)

    def held_out_dataset(self) -> Dataset | None:
        """The held-out pairs without labels (retrieval, held-out objective metrics)."""
        self._load_pairs()
        if self._test_idx is None or len(self._test_idx) == 0:
            return None
        return self._dataset("test", with_labels=False)

    def eval_split(self) -> EvalSplit | None:
        """Labeled training pairs vs the labeled held-out pairs; ``None`` without labels."""
        pairs = self._load_pairs()
        if pairs.labels is None or self._test_idx is None or len(self._test_idx) == 0:
            return None
        return EvalSplit(
            train=self._dataset("train", with_labels=True),
            test=self._dataset("test", with_labels=True),
            class_names=tuple(pairs.class_names),
            groups=self._groups,
        )

    def labeled_split(self, source: Params, test_fraction: float, seed: int) -> EvalSplit:
        """Labeled pairs of another folder or ``.jsonl`` source, decoded like the training pairs.

        Images go through the image part (same size and channels), captions through the run's
        tokenizer (trained on the run's own training captions, never on these). The split keeps
        groups apart when a folder source has a ``group_pattern``. Every encoder embeds these
        pairs, each its own input: the ``image/`` probes score images alone, the ``text/``
        probes captions alone.
        """
        if not isinstance(source, FolderPairSource | JsonlPairSource):
            raise ValueError(
                "an image_text evaluation source must be a labeled folder or .jsonl file, not the default digits"
            )
        self._ensure_prepared()
        pairs = self._read_source(source)
        if pairs.labels is None:
            raise ValueError(
                f"image_text evaluation source {source.path} has no labels "
                "(a folder needs class subfolders, a .jsonl file a label_field)"
            )
        train, test, groups = split_pairs(pairs, source, test_fraction, seed)
        images = self.parts["image"].part_dataset(pairs.paths)
        texts = self.parts["text"].part_dataset(pairs.captions)

        def side(indices: np.ndarray) -> PairDataset:
            chosen = [int(i) for i in indices]
            assert pairs.paths is not None and pairs.labels is not None
            return PairDataset(
                Subset(images, chosen),
                Subset(texts, chosen),
                pairs.labels[chosen],
                [str(pairs.paths[i]) for i in chosen],
            )

        return EvalSplit(side(train), side(test), tuple(pairs.class_names), groups=groups, source=str(source.path))

    def labeled_source(self, path: Path, label: str | None = None, group: str | None = None) -> dict[str, Any]:
        """A folder of pairs (class subfolders; ``group`` is a group pattern) or a ``.jsonl`` list (``label`` names its field)."""
        if path.is_dir():
            if label is not None:
                raise ValueError("a folder of pairs takes labels from class subfolders; --label does not apply")
            return {"type": "folder", "path": str(path), "group_pattern": group}
        if path.suffix == ".jsonl" and group is None:
            return {"type": "jsonl", "path": str(path), "label_field": label or "label"}
        if path.suffix == ".jsonl":
            raise ValueError("a .jsonl pair list has no group option; use a folder of pairs with --group PATTERN")
        raise ValueError(
            f"{path}: give a folder of image + caption pairs in class subfolders, or a labeled .jsonl list"
        )

    def collate(self, samples: list[Batch]) -> Batch:
        """The text part's collate: captions right-padded to the longest in the batch, images (and
        labels) stacked, and each caption's ``caption_key``."""
        self._ensure_prepared()
        batch = self.parts["text"].collate(samples)
        # Keyed here, before the device-side caption augmentations: CLIP's identical-caption
        # positives must compare captions as written (two copies of "document save" that token
        # dropout cut differently are still one caption, and "document save as" cut to
        # "document save" is not that caption).
        batch[CAPTION_KEY] = caption_keys(batch["input_ids"], batch["attention_mask"])
        return batch

    def on_device(self, batch: Batch) -> Batch:
        """Each part's ``on_device`` on a batch that holds that part's inputs (images -> float32 ``[0, 1]``)."""
        for part in self.parts.values():
            if all(name in batch for name in part.input_names):
                batch = part.on_device(batch)
        return batch

    def raw_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The raw-input baseline of each part, by the encoder key it matches (``image``, ``text``).

        ``image``: the ``image`` modality's downsampled pixels; ``text``: the ``text`` modality's
        bag of words over the caption's token ids (special tokens left out).
        """
        self._ensure_prepared()
        return {name: part.raw_features(batch) for name, part in self.parts.items()}  # type: ignore[misc]

    def example_batch(self, batch_size: int, device: torch.device | str = "cpu") -> Batch:
        """Each part's example batch: random ``[0, 1]`` images and random non-special captions of ``max_length`` tokens."""
        self._ensure_prepared()
        batch: Batch = {}
        for part in self.parts.values():
            batch.update(part.example_batch(batch_size, device))
        return batch

    def info(self) -> ModalityInfo:
        """The ``image`` part's facts (``channels``, ``image_size``, ``mean``, ``std``...), then the
        ``text`` part's (``vocab_size``, ``pad_token_id``, special token ids, ``max_length``...),
        plus ``parts: ["image", "text"]``."""
        self._ensure_prepared()
        merged = ModalityInfo()
        for part in self.parts.values():
            merged = merged.merged(part.info())
        return merged.merged(ModalityInfo(parts=list(self.parts)))

    def continuation_token_ids(self) -> list[int]:
        """The text part's word-continuation ids (``##`` pieces), for the ``mlm`` whole-word masking."""
        self._ensure_prepared()
        return self.parts["text"].continuation_token_ids()

    def input_spec(self) -> dict[str, Any]:
        """Inputs of both encoders (the exporter keeps the ones each encoder reads):
        ``image`` float32 ``[batch, C, S, S]`` in ``[0, 1]``, ``input_ids``/``attention_mask``
        int64 ``[batch, sequence]``; preprocessing of each part under its name."""
        self._ensure_prepared()
        specs = {name: part.input_spec() for name, part in self.parts.items()}
        text = specs["text"]["preprocessing"]
        if "template" in text:  # the text part wraps each caption as it wraps any text
            text["template"] = "[CLS] caption [SEP]"
        return {
            "inputs": {k: v for spec in specs.values() for k, v in spec["inputs"].items()},
            "dynamic_axes": {k: v for spec in specs.values() for k, v in spec["dynamic_axes"].items()},
            "preprocessing": {name: spec["preprocessing"] for name, spec in specs.items()},
        }

    def write_export_files(self, out_dir: Path, input_names: Sequence[str]) -> list[str]:
        """The files of each part whose inputs the exported model reads (the tokenizer beside the text model)."""
        self._ensure_prepared()
        written: list[str] = []
        for part in self.parts.values():
            if any(name in input_names for name in part.input_names):
                written += part.write_export_files(out_dir, input_names)
        return written

    def fingerprint(self) -> str:
        """The source's fingerprint plus a CRC of the captions and the text/image settings."""
        pairs = self._load_pairs()
        crc = zlib.crc32(self.params.model_dump_json(exclude={"source"}).encode())
        for caption in pairs.captions:
            crc = zlib.crc32(caption.encode("utf-8"), crc)
        return f"{pairs.fingerprint}:{crc:08x}"
