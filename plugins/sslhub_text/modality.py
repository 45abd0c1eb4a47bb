"""The ``text`` modality: documents -> token ids, dynamically padded batches.

Samples are ``{"input_ids": int64 [L], "attention_mask": int64 [L]}`` with ``L <= max_length``
(variable); labeled evaluation samples add ``"label"`` (int64 scalar). :meth:`TextModality.collate`
pads to the longest sample of the batch with the tokenizer's pad id, on the right.

The corpus is small enough to tokenize once, up front, in :meth:`TextModality.prepare`; the
datasets then hold flat ``numpy`` arrays, so they pickle cheaply into DataLoader workers and
are deterministic per index.
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field
from tokenizers import Tokenizer
from torch.utils.data import Dataset

from sslhub import Batch, EvalSplit, Modality, Params
from sslhub_text.corpus import Document, SkipCounts, file_documents, pydoc_documents, split_documents
from sslhub_text.tokenizer import (
    CONTINUATION_PREFIX,
    SpecialTokens,
    continuation_token_ids,
    load_tokenizer,
    train_tokenizer,
)

logger = logging.getLogger("sslhub")

TOKENIZER_FILE = "tokenizer.json"


class DefaultSource(Params):
    """The embedded corpus: paragraphs of CPython's reference documentation (``pydoc_data.topics``)."""

    type: Literal["default"] = "default"


class FilesSource(Params):
    """Documents read from a ``.txt``/``.jsonl`` file or a folder of them."""

    type: Literal["files"] = "files"
    path: str = Field(description="A .txt or .jsonl file, or a folder searched recursively for them.")
    text_field: str = Field("text", min_length=1, description="Key holding the text in each JSON line.")
    label_field: str | None = Field(
        None, description="Key holding a class label in each JSON line; enables the labeled evaluation split."
    )
    one_document_per: Literal["line", "file"] = Field(
        "line", description="Whether each line or each whole .txt file is one document (JSON lines: always a line)."
    )


class TrainTokenizer(Params):
    """Train a tokenizer locally on the recipe's training documents (never on held-out ones)."""

    type: Literal["train"] = "train"
    vocab_size: int = Field(4000, ge=64, le=1_000_000, description="Vocabulary size including special tokens.")
    lowercase: bool = Field(True, description="Lowercase and strip accents before tokenizing.")
    algorithm: Literal["wordpiece", "bpe"] = Field("wordpiece", description="Subword algorithm.")
    min_frequency: int = Field(2, ge=1, description="Minimum count for a vocabulary entry or merge.")


class LocalTokenizer(Params):
    """Load an existing ``tokenizer.json`` (HF ``tokenizers`` format)."""

    type: Literal["local"] = "local"
    path: str = Field(description="A tokenizer.json file or a folder containing one.")


class TextParams(Params):
    """Parameters of the ``text`` modality (everything under ``data:`` except ``modality``)."""

    source: Annotated[DefaultSource | FilesSource, Field(discriminator="type")] = Field(
        default_factory=DefaultSource, description="Where documents come from: {type: default} or {type: files, ...}."
    )
    max_length: int = Field(64, ge=4, le=65536, description="Maximum tokens per sample, special tokens included.")
    held_out_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Fraction of documents held out (by a hash of their text) for metrics."
    )
    pack: bool = Field(
        True,
        description="Concatenate documents ([SEP] between) and cut into max_length samples, so no padding is wasted.",
    )
    pad_to_multiple_of: int = Field(1, ge=1, description="Round the padded batch length up to a multiple of this.")
    tokenizer: Annotated[TrainTokenizer | LocalTokenizer, Field(discriminator="type")] = Field(
        default_factory=TrainTokenizer, description="{type: train, vocab_size, ...} or {type: local, path}."
    )


class TokenSequences(Dataset):
    """Token-id sequences stored flat (picklable, deterministic).

    Args:
        ids: ``int32 [total]`` all sequences concatenated.
        offsets: ``int64 [N + 1]`` start of each sequence in ``ids``.
        labels: ``int64 [N]`` class ids, or ``None`` for unlabeled data.
    """

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, labels: np.ndarray | None = None):
        self.ids = ids
        self.offsets = offsets
        self.labels = labels

    @classmethod
    def from_lists(cls, sequences: list[list[int]], labels: list[int] | None = None) -> TokenSequences:
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter((t for s in sequences for t in s), dtype=np.int32, count=int(offsets[-1]))
        return cls(ids, offsets, None if labels is None else np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> Batch:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} sequences")
        input_ids = torch.from_numpy(self.ids[self.offsets[index] : self.offsets[index + 1]].astype(np.int64))
        sample = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if self.labels is not None:
            sample["label"] = torch.tensor(int(self.labels[index]), dtype=torch.int64)
        return sample

    def num_tokens(self) -> int:
        return int(self.offsets[-1])


def pad_batch(samples: list[Batch], pad_token_id: int, pad_to_multiple_of: int = 1) -> Batch:
    """Right-pad ``input_ids``/``attention_mask`` to the longest sample; stack any other keys.

    Returns:
        ``input_ids``/``attention_mask``: ``int64 [B, L_max]``; ``label``: ``int64 [B]`` if present.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    longest = max(int(s["input_ids"].shape[0]) for s in samples)
    longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(samples), longest), pad_token_id, dtype=torch.int64)
    attention_mask = torch.zeros((len(samples), longest), dtype=torch.int64)
    for row, sample in enumerate(samples):
        n = sample["input_ids"].shape[0]
        input_ids[row, :n] = sample["input_ids"]
        attention_mask[row, :n] = sample["attention_mask"]
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    for key in samples[0]:
        if key not in batch:
            batch[key] = torch.stack([s[key] for s in samples])
    return batch


class TextModality(Modality):
    """Text documents tokenized with a locally trained (or loaded) subword tokenizer.

    Args:
        params: :class:`TextParams`.
        context: the build context (only the seed-independent parts are used: the split and
            the tokenizer are deterministic functions of the data).
    """

    input_names = ("input_ids", "attention_mask")

    def __init__(self, params: TextParams, context: Any = None):
        self.params = params
        self._tokenizer: Tokenizer | None = None
        self._special: SpecialTokens | None = None
        self._train_documents: list[Document] | None = None
        self._held_out_documents: list[Document] = []
        self._class_names: list[str] = []
        self._datasets: dict[str, TokenSequences | None] = {}
        self._prepared_dir: Path | None = None

    # ----------------------------------------------------------------- data loading
    def _load_documents(self) -> None:
        if self._train_documents is not None:
            return
        skipped = SkipCounts()
        source = self.params.source
        if isinstance(source, FilesSource):
            documents = file_documents(
                Path(source.path), source.text_field, source.label_field, source.one_document_per, skipped
            )
            where = source.path
        else:
            documents = pydoc_documents(skipped)
            where = "the embedded pydoc corpus"
        if skipped.total():
            logger.warning("text: skipped %d items from %s (%s)", skipped.total(), where, skipped.describe())
        if not documents:
            raise ValueError(f"no usable text documents in {where}")
        self._train_documents, self._held_out_documents = split_documents(documents, self.params.held_out_fraction)
        if not self._train_documents:
            raise ValueError(f"all {len(documents)} documents of {where} fell into the held-out part")
        self._class_names = sorted({d.label for d in documents if d.label is not None})

    def prepare(self, run_dir: Path | None) -> None:
        """Read documents, train or load the tokenizer, tokenize everything.

        With a ``run_dir`` the tokenizer is saved there as ``tokenizer.json`` (the exported
        model's preprocessing points at it); a trained tokenizer already present there (a
        resumed run) is loaded instead of retrained.
        """
        if self._tokenizer is not None and (run_dir is None or self._prepared_dir == Path(run_dir)):
            return
        self._load_documents()
        saved = Path(run_dir) / TOKENIZER_FILE if run_dir is not None else None
        if self._tokenizer is None:
            spec = self.params.tokenizer
            if isinstance(spec, LocalTokenizer):
                self._tokenizer = load_tokenizer(spec.path)
            elif saved is not None and saved.is_file():
                logger.info("text: reusing the tokenizer saved at %s", saved)
                self._tokenizer = load_tokenizer(saved)
            else:
                self._tokenizer = train_tokenizer(
                    (d.text for d in self._train_documents),
                    vocab_size=spec.vocab_size,
                    lowercase=spec.lowercase,
                    algorithm=spec.algorithm,
                    min_frequency=spec.min_frequency,
                )
            self._special = SpecialTokens.of(self._tokenizer)
            self._tokenize_all()
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            if not saved.is_file():
                self._tokenizer.save(str(saved))
            self._prepared_dir = Path(run_dir)

    def _ensure_prepared(self) -> None:
        if self._tokenizer is None:
            self.prepare(None)

    def _encode(self, documents: list[Document]) -> list[list[int]]:
        assert self._tokenizer is not None
        # Tokenize in the main process; DataLoader workers forked afterwards only index arrays,
        # so the Rust thread pool is not needed there (and would warn after the fork).
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        encodings = self._tokenizer.encode_batch([d.text for d in documents], add_special_tokens=False)
        return [e.ids for e in encodings]

    def _wrap(self, tokens: list[int]) -> list[int]:
        """``[CLS] tokens [SEP]`` (whichever of the two the tokenizer has)."""
        special = self._special
        assert special is not None
        head = [special.cls] if special.cls is not None else []
        tail = [special.sep] if special.sep is not None else []
        return head + tokens + tail

    def _content_length(self) -> int:
        special = self._special
        assert special is not None
        return self.params.max_length - (special.cls is not None) - (special.sep is not None)

    def _training_sequences(self, token_lists: list[list[int]]) -> list[list[int]]:
        """Cut documents into samples: packed into a stream, or each document chunked alone."""
        special = self._special
        assert special is not None
        width = self._content_length()
        sequences: list[list[int]] = []
        if self.params.pack:
            stream: list[int] = []
            for tokens in token_lists:
                stream.extend(tokens)
                if special.sep is not None:
                    stream.append(special.sep)
            # Each sample is [CLS] + up to max_length - 1 stream tokens; document boundaries
            # inside it are the [SEP]s already in the stream.
            width = self.params.max_length - (special.cls is not None)
            head = [special.cls] if special.cls is not None else []
            sequences = [head + stream[i : i + width] for i in range(0, len(stream), width)]
        else:
            for tokens in token_lists:
                sequences.extend(self._wrap(tokens[i : i + width]) for i in range(0, len(tokens), width))
        return sequences

    def _tokenize_all(self) -> None:
        assert self._train_documents is not None
        train_tokens = self._encode(self._train_documents)
        held_tokens = self._encode(self._held_out_documents)
        empty = sum(not t for t in train_tokens) + sum(not t for t in held_tokens)
        if empty:
            logger.warning("text: skipped %d documents that produced no tokens", empty)
        train_pairs = [(d, t) for d, t in zip(self._train_documents, train_tokens, strict=True) if t]
        held_pairs = [(d, t) for d, t in zip(self._held_out_documents, held_tokens, strict=True) if t]
        self._datasets["train"] = TokenSequences.from_lists(self._training_sequences([t for _, t in train_pairs]))
        self._datasets["held_out"] = (
            TokenSequences.from_lists(self._training_sequences([t for _, t in held_pairs])) if held_pairs else None
        )
        # Labeled split: one sample per document, truncated, never packed (a label is per document).
        self._datasets["eval_train"] = self._datasets["eval_test"] = None
        if self._class_names:
            index = {name: i for i, name in enumerate(self._class_names)}
            width = self._content_length()

            def labeled(pairs: list[tuple[Document, list[int]]]) -> TokenSequences:
                kept = [(d, t) for d, t in pairs if d.label is not None]
                return TokenSequences.from_lists(
                    [self._wrap(t[:width]) for _, t in kept], [index[d.label] for d, _ in kept]
                )

            self._datasets["eval_train"] = labeled(train_pairs)
            self._datasets["eval_test"] = labeled(held_pairs)

    # ----------------------------------------------------------------- Modality API
    @property
    def tokenizer(self) -> Tokenizer:
        """The HF ``tokenizers.Tokenizer`` (trained on first use if :meth:`prepare` was not called)."""
        self._ensure_prepared()
        assert self._tokenizer is not None
        return self._tokenizer

    def train_dataset(self) -> TokenSequences:
        self._ensure_prepared()
        dataset = self._datasets["train"]
        assert dataset is not None
        return dataset

    def held_out_dataset(self) -> TokenSequences | None:
        self._ensure_prepared()
        return self._datasets["held_out"]

    def eval_split(self) -> EvalSplit | None:
        """Documents with labels (pydoc: documentation chapter; files: ``label_field``), else ``None``."""
        self._ensure_prepared()
        train, test = self._datasets["eval_train"], self._datasets["eval_test"]
        if train is None or test is None or len(train) == 0 or len(test) == 0:
            return None
        return EvalSplit(train=train, test=test, class_names=tuple(self._class_names))

    def collate(self, samples: list[Batch]) -> Batch:
        self._ensure_prepared()
        assert self._special is not None
        return pad_batch(samples, self._special.pad, self.params.pad_to_multiple_of)

    def example_batch(self, batch_size: int, device: torch.device | str = "cpu") -> Batch:
        """``batch_size`` random non-special token sequences of ``max_length``, wrapped in [CLS]/[SEP]."""
        info = self.info()
        generator = torch.Generator().manual_seed(0)
        specials = torch.tensor(info["special_token_ids"], dtype=torch.int64)
        allowed = torch.arange(info["vocab_size"])[~torch.isin(torch.arange(info["vocab_size"]), specials)]
        body = allowed[torch.randint(len(allowed), (batch_size, self._content_length()), generator=generator)]
        rows = [torch.tensor(self._wrap(row.tolist()), dtype=torch.int64) for row in body]
        input_ids = torch.stack(rows)
        return {"input_ids": input_ids.to(device), "attention_mask": torch.ones_like(input_ids).to(device)}

    def info(self) -> dict[str, Any]:
        """Vocabulary facts for encoders and objectives.

        Keys: ``vocab_size``, ``pad_token_id``, ``mask_token_id``, ``cls_token_id``,
        ``sep_token_id``, ``unk_token_id`` (``None`` where the tokenizer lacks one),
        ``special_token_ids`` (never masked or augmented), ``max_length``,
        ``continuation_prefix`` (marks word-continuation pieces, for whole-word masking) and
        ``tokenizer_file``. The tokenizer object itself is :attr:`tokenizer`.
        """
        self._ensure_prepared()
        special = self._special
        assert special is not None and self._tokenizer is not None
        return {
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
        }

    def continuation_token_ids(self) -> list[int]:
        """Vocabulary ids that continue a word (``##`` pieces), for whole-word masking."""
        return continuation_token_ids(self.tokenizer)

    def input_spec(self) -> dict[str, Any]:
        info = self.info()
        tokenizer = self.params.tokenizer
        return {
            "inputs": {
                "input_ids": {"dtype": "int64", "shape": ["batch", "sequence"]},
                "attention_mask": {"dtype": "int64", "shape": ["batch", "sequence"]},
            },
            "dynamic_axes": {
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
            },
            "preprocessing": {
                "tokenizer_file": TOKENIZER_FILE,
                "lowercase": tokenizer.lowercase if isinstance(tokenizer, TrainTokenizer) else None,
                "template": "[CLS] text [SEP]",
                "max_length": info["max_length"],
                "padding": "right",
                "pad_token_id": info["pad_token_id"],
                "cls_token_id": info["cls_token_id"],
                "sep_token_id": info["sep_token_id"],
                "vocab_size": info["vocab_size"],
            },
        }

    def write_export_files(self, out_dir: Path) -> list[str]:
        """The tokenizer, saved beside an exported model as ``tokenizer.json``."""
        self._ensure_prepared()
        assert self._tokenizer is not None
        self._tokenizer.save(str(Path(out_dir) / TOKENIZER_FILE))
        return [TOKENIZER_FILE]

    def fingerprint(self) -> str:
        """CRC32 of the training and held-out document texts and the tokenizer/sequence settings."""
        self._load_documents()
        assert self._train_documents is not None
        crc = zlib.crc32(self.params.model_dump_json(exclude={"source"}).encode())
        for document in (*self._train_documents, *self._held_out_documents):
            crc = zlib.crc32(document.text.encode("utf-8"), crc)
        return f"text-{len(self._train_documents)}+{len(self._held_out_documents)}docs-{crc:08x}"
