"""The ``image_text`` modality: image-caption pairs for one image and one text encoder.

Samples:
    ``{"image": uint8 [C, S, S], "input_ids": int64 [L], "attention_mask": int64 [L]}`` with
    ``L <= max_length`` (``[CLS] caption [SEP]``), plus ``"label"`` (int64 scalar) on the
    labeled eval split.
Batches after :meth:`ImageTextModality.collate` and :meth:`ImageTextModality.on_device`:
    ``{"image": float32 [B, C, S, S] in [0, 1], "input_ids": int64 [B, L_max],
    "attention_mask": int64 [B, L_max]}`` (captions right-padded with the pad id).

The image part behaves exactly like the ``image`` modality (normalisation inside the image
encoders, so image augmentations such as ``random_resized_crop`` apply to ``batch["image"]``
and leave the text alone); the text part like the ``text`` modality (a WordPiece tokenizer
trained locally on the training captions in :meth:`ImageTextModality.prepare`). ``info()``
merges the facts of both, so ``small_cnn``/``timm`` and ``hf`` build from it.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationError, model_validator
from tokenizers import Tokenizer
from torch.utils.data import Dataset

from sslhub import Batch, BuildContext, EvalSplit, Modality, Params
from sslhub_multimodal.pairs import PairCollection, PairDataset, digit_pairs, folder_pairs, jsonl_pairs
from sslhub_text.modality import LocalTokenizer, TokenSequences, TrainTokenizer, bag_of_words, pad_batch
from sslhub_text.tokenizer import (
    CONTINUATION_PREFIX,
    TOKENIZER_FILE,
    SpecialTokens,
    continuation_token_ids,
    load_tokenizer,
    save_beside_model,
    token_input_spec,
)
from sslhub_text.tokenizer import train_tokenizer as train_wordpiece
from sslhub_vision import sources
from sslhub_vision.modality import ImageModality, ImageParams
from sslhub_vision.sources import ArrayImageDataset, FolderImageDataset

logger = logging.getLogger("sslhub")


class DefaultPairSource(Params):
    """The embedded pairs: scikit-learn's handwritten digits with captions built from their labels."""

    type: Literal["default"] = "default"


class FolderPairSource(Params):
    """Image files with a same-stem caption file beside each (``a.png`` + ``a.txt``)."""

    type: Literal["folder"] = "folder"
    path: Path = Field(description="root folder, searched recursively; first-level subfolders are classes")
    extensions: list[str] = Field(
        default_factory=lambda: list(sources.DEFAULT_EXTENSIONS), min_length=1, description="image file extensions"
    )
    caption_extension: str = Field(".txt", pattern=r"^\.\w+$", description="extension of the caption files")


class JsonlPairSource(Params):
    """A ``.jsonl`` file of ``{"image": path, "caption": text}`` lines (paths relative to the file)."""

    type: Literal["jsonl"] = "jsonl"
    path: Path = Field(description="the .jsonl file")
    image_field: str = Field("image", min_length=1, description="key of the image path")
    caption_field: str = Field("caption", min_length=1, description="key of the caption text")
    label_field: str | None = Field(None, description="key of a class label; enables the labeled eval split")


PairSource = Annotated[DefaultPairSource | FolderPairSource | JsonlPairSource, Field(discriminator="type")]


class ImageTextParams(Params):
    """Parameters of the ``image_text`` modality (everything under ``data:`` but ``modality``)."""

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
    tokenizer: Annotated[TrainTokenizer | LocalTokenizer, Field(discriminator="type")] = Field(
        default_factory=lambda: TrainTokenizer(vocab_size=1000, min_frequency=1),
        description="{type: train, vocab_size, ...} trains on the training captions; {type: local, path} loads one",
    )

    @model_validator(mode="after")
    def _check_image_constants(self) -> ImageTextParams:
        try:
            self.image_params()
        except ValidationError as exc:
            raise ValueError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
        return self

    def image_params(self) -> ImageParams:
        """The image half as the ``image`` modality's parameters (for its info and input spec)."""
        return ImageParams(image_size=self.image_size, channels=self.channels, mean=self.mean, std=self.std)


class ImageTextModality(Modality):
    """Image-caption pairs from the embedded digits, a folder of pairs or a ``.jsonl`` list.

    The data are split once, deterministically (``split_seed``; stratified when there are
    labels): ``train_dataset`` is the training pairs; ``held_out_dataset`` the ``eval_fraction``
    held out (for retrieval); ``eval_split`` the same two parts with labels (digit class for
    the default data) so kNN and linear probes run per encoder.

    Args:
        params: :class:`ImageTextParams`.
        context: the build context (unused: the split and tokenizer depend on the data only).
    """

    input_names = ("image", "input_ids", "attention_mask")

    def __init__(self, params: ImageTextParams | None = None, context: BuildContext | None = None):
        self.params = params or ImageTextParams()
        self._image = ImageModality(self.params.image_params())
        self._pairs: PairCollection | None = None
        self._train_idx: np.ndarray | None = None
        self._test_idx: np.ndarray | None = None
        self._tokenizer: Tokenizer | None = None
        self._special: SpecialTokens | None = None
        self._texts: dict[str, TokenSequences] = {}
        self._prepared_dir: Path | None = None

    # ----------------------------------------------------------------- data
    def _load_pairs(self) -> PairCollection:
        if self._pairs is not None:
            return self._pairs
        params, source = self.params, self.params.source
        if isinstance(source, FolderPairSource):
            pairs = folder_pairs(source.path.expanduser(), source.extensions, source.caption_extension)
        elif isinstance(source, JsonlPairSource):
            pairs = jsonl_pairs(source.path.expanduser(), source.image_field, source.caption_field, source.label_field)
        else:
            pairs = digit_pairs(params.image_size, params.channels, params.eval_fraction, params.split_seed)
        if pairs.split is not None:
            train, test = pairs.split
        else:
            train, test = sources.split_indices(len(pairs), pairs.labels, params.eval_fraction, params.split_seed)
        if len(train) == 0:
            raise ValueError(f"image_text: all {len(pairs)} pairs fell into the held-out part; lower eval_fraction")
        self._pairs, self._train_idx, self._test_idx = pairs, train, test
        return pairs

    def prepare(self, run_dir: Path | None) -> None:
        """Load the pairs, train (or load) the tokenizer on the training captions, tokenize all captions.

        With a ``run_dir`` the tokenizer is saved there as ``tokenizer.json``; one already
        there (a resumed run) is reused rather than retrained.
        """
        if self._tokenizer is not None and (run_dir is None or self._prepared_dir == Path(run_dir)):
            return
        pairs = self._load_pairs()
        saved = Path(run_dir) / TOKENIZER_FILE if run_dir is not None else None
        if self._tokenizer is None:
            spec = self.params.tokenizer
            if isinstance(spec, LocalTokenizer):
                self._tokenizer = load_tokenizer(spec.path)
            elif saved is not None and saved.is_file():
                logger.info("image_text: reusing the tokenizer saved at %s", saved)
                self._tokenizer = load_tokenizer(saved)
            else:
                # held-out captions stay unseen: their phrasings are part of what is evaluated
                self._tokenizer = train_wordpiece(
                    (pairs.captions[i] for i in self._train_idx),
                    vocab_size=spec.vocab_size,
                    lowercase=spec.lowercase,
                    algorithm=spec.algorithm,
                    min_frequency=spec.min_frequency,
                )
            self._special = SpecialTokens.of(self._tokenizer)
            self._texts = {
                "train": self._tokenize([pairs.captions[i] for i in self._train_idx]),
                "test": self._tokenize([pairs.captions[i] for i in self._test_idx]),
            }
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            if not saved.is_file():
                self._tokenizer.save(str(saved))
            self._prepared_dir = Path(run_dir)

    def _ensure_prepared(self) -> None:
        if self._tokenizer is None:
            self.prepare(None)

    def _tokenize(self, texts: list[str]) -> TokenSequences:
        """``[CLS] caption [SEP]`` ids per text, captions truncated to fit ``max_length``."""
        assert self._tokenizer is not None and self._special is not None
        # Tokenize in the main process; forked DataLoader workers then only index arrays.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        special = self._special
        head = [special.cls] if special.cls is not None else []
        tail = [special.sep] if special.sep is not None else []
        width = self.params.max_length - len(head) - len(tail)
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return TokenSequences.from_lists([head + e.ids[:width] + tail for e in encodings])

    def tokenize(self, texts: list[str]) -> Batch:
        """Tokenize and pad free texts (zero-shot prompts) like captions.

        Returns:
            ``input_ids``/``attention_mask``: int64 ``[len(texts), L_max]`` on the CPU.
        """
        self._ensure_prepared()
        if not texts:
            raise ValueError("tokenize needs at least one text")
        sequences = self._tokenize(list(texts))
        return self.collate([sequences[i] for i in range(len(sequences))])

    def _dataset(self, part: str, with_labels: bool) -> PairDataset:
        self._ensure_prepared()
        pairs = self._pairs
        assert pairs is not None
        indices = self._train_idx if part == "train" else self._test_idx
        size, channels = self.params.image_size, self.params.channels
        if pairs.images is not None:
            images: ArrayImageDataset | FolderImageDataset = ArrayImageDataset(pairs.images, indices, size, channels)
        else:
            assert pairs.paths is not None
            images = FolderImageDataset([pairs.paths[i] for i in indices], size, channels)
        labels = pairs.labels[indices] if with_labels and pairs.labels is not None else None
        return PairDataset(images, self._texts[part], labels)

    def captions(self, part: Literal["train", "test"] = "test") -> list[str]:
        """The caption strings of the training or held-out pairs, in dataset order."""
        pairs = self._load_pairs()
        indices = self._train_idx if part == "train" else self._test_idx
        return [pairs.captions[i] for i in indices]

    # ----------------------------------------------------------------- Modality API
    @property
    def tokenizer(self) -> Tokenizer:
        """The HF ``tokenizers.Tokenizer`` of the captions."""
        self._ensure_prepared()
        assert self._tokenizer is not None
        return self._tokenizer

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
        )

    def collate(self, samples: list[Batch]) -> Batch:
        """Stack images (and labels), right-pad captions to the longest in the batch."""
        self._ensure_prepared()
        assert self._special is not None
        return pad_batch(samples, self._special.pad)

    def on_device(self, batch: Batch) -> Batch:
        """uint8 images -> float32 ``[0, 1]``; token ids pass through."""
        return self._image.on_device(batch) if "image" in batch else batch

    def raw_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The raw-input baseline of each side, by the encoder key it matches (``image``, ``text``).

        ``image``: the ``image`` modality's downsampled pixels; ``text``: the ``text`` modality's
        bag of words over the caption's token ids (special tokens left out).
        """
        self._ensure_prepared()
        assert self._special is not None and self._tokenizer is not None
        vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        return {
            "image": self._image.raw_features(batch),
            "text": bag_of_words(batch["input_ids"], batch["attention_mask"], vocab_size, self._special.all_ids),
        }

    def example_batch(self, batch_size: int, device: torch.device | str = "cpu") -> Batch:
        """Random ``[0, 1]`` images and random non-special captions of ``max_length`` tokens."""
        self._ensure_prepared()
        special = self._special
        assert special is not None
        vocab = self.tokenizer.get_vocab_size(with_added_tokens=True)
        generator = torch.Generator().manual_seed(0)
        ordinary = torch.tensor([i for i in range(vocab) if i not in set(special.all_ids)], dtype=torch.int64)
        head = [special.cls] if special.cls is not None else []
        tail = [special.sep] if special.sep is not None else []
        width = self.params.max_length - len(head) - len(tail)
        body = ordinary[torch.randint(len(ordinary), (batch_size, width), generator=generator)]
        input_ids = torch.cat(
            [
                torch.tensor(head, dtype=torch.int64).expand(batch_size, -1),
                body,
                torch.tensor(tail, dtype=torch.int64).expand(batch_size, -1),
            ],
            dim=1,
        )
        return {
            **self._image.example_batch(batch_size, device),
            "input_ids": input_ids.to(device),
            "attention_mask": torch.ones_like(input_ids).to(device),
        }

    def info(self) -> dict[str, Any]:
        """The ``image`` modality's facts (``channels``, ``image_size``, ``mean``, ``std``) and the
        ``text`` modality's (``vocab_size``, ``pad_token_id``, ``mask_token_id``, ``cls_token_id``,
        ``sep_token_id``, ``unk_token_id``, ``special_token_ids``, ``max_length``,
        ``continuation_prefix``, ``tokenizer_file``), plus ``parts: ["image", "text"]``."""
        self._ensure_prepared()
        special = self._special
        assert special is not None and self._tokenizer is not None
        return {
            **self._image.info(),
            "vocab_size": self._tokenizer.get_vocab_size(with_added_tokens=True),
            "pad_token_id": special.pad,
            "mask_token_id": special.mask,
            "cls_token_id": special.cls,
            "sep_token_id": special.sep,
            "unk_token_id": special.unk,
            "special_token_ids": list(special.all_ids),
            "max_length": self.params.max_length,
            "continuation_prefix": CONTINUATION_PREFIX,
            "tokenizer_file": TOKENIZER_FILE,
            "parts": ["image", "text"],
        }

    def continuation_token_ids(self) -> list[int]:
        """Vocabulary ids that continue a word (``##`` pieces), for the ``mlm`` whole-word masking."""
        return continuation_token_ids(self.tokenizer)

    def input_spec(self) -> dict[str, Any]:
        """Inputs of both encoders (the exporter keeps the ones each encoder reads):
        ``image`` float32 ``[batch, C, S, S]`` in ``[0, 1]``, ``input_ids``/``attention_mask``
        int64 ``[batch, sequence]``; preprocessing of each part under ``image`` and ``text``."""
        image_spec = self._image.input_spec()
        tokenizer = self.params.tokenizer
        lowercase = tokenizer.lowercase if isinstance(tokenizer, TrainTokenizer) else None
        text_spec = token_input_spec(self.info(), lowercase, "[CLS] caption [SEP]")
        return {
            "inputs": {**image_spec["inputs"], **text_spec["inputs"]},
            "dynamic_axes": {**image_spec["dynamic_axes"], **text_spec["dynamic_axes"]},
            "preprocessing": {"image": image_spec["preprocessing"], "text": text_spec["preprocessing"]},
        }

    def write_export_files(self, out_dir: Path, input_names: Sequence[str]) -> list[str]:
        """The tokenizer, saved as ``tokenizer.json`` beside a model that reads tokens (not the image one)."""
        if "input_ids" not in input_names:
            return []
        self._ensure_prepared()
        assert self._tokenizer is not None
        return save_beside_model(self._tokenizer, out_dir)

    def fingerprint(self) -> str:
        """The source's fingerprint plus a CRC of the captions and the text/image settings."""
        pairs = self._load_pairs()
        crc = zlib.crc32(self.params.model_dump_json(exclude={"source"}).encode())
        for caption in pairs.captions:
            crc = zlib.crc32(caption.encode("utf-8"), crc)
        return f"{pairs.fingerprint}:{crc:08x}"
