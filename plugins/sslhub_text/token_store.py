"""Tokenized samples built in one streaming pass, kept in memory or in a disk-backed store.

:func:`write_samples` reads documents one chunk at a time, tokenizes each chunk, sends each
document to the training or held-out side (:func:`~sslhub_text.corpus.is_held_out`), cuts
it into samples (packed or one document at a time) and appends them to four splits:

- ``train`` / ``held_out``: unlabeled samples for training and objective metrics;
- ``eval_train`` / ``eval_test``: one sample per labeled document, for kNN / linear probes.

Nothing but the current chunk is held in memory. With a directory, each split is written as
flat files and read back through ``numpy.memmap``; without one, the same arrays stay in
memory. Either way a split is a :class:`TokenSequences`, a map-style dataset, so the engine's
seeded, resumable, rank-sharded sampler works unchanged.

Layout of a store directory (``SPLIT`` is one of the four names above)::

    SPLIT.ids       token ids of every sample, concatenated (uint16, or int32 for vocabularies over 65536)
    SPLIT.offsets   int64 [N + 1]: sample i is ids[offsets[i]:offsets[i + 1]]
    SPLIT.labels    int64 [N] class index (labeled splits only)
    meta.json       written last: format version, key, dtype, per-split counts, class names,
                    document counts, skip counts, a CRC of the document texts

:func:`cached_store` builds a store in a ``KEY.partial-*`` folder and renames it to ``KEY``
only when complete, under a file lock (so ranks started together by ``torchrun`` build it
once). A store whose ``meta.json`` is missing or disagrees with its files (an interrupted
build, a truncated copy) is rebuilt, never used. The token ids themselves are not
checksummed: verifying them would mean reading the whole store at every start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import Dataset

from sslhub import Batch
from sslhub_text.corpus import Document, SkipCounts, is_held_out

logger = logging.getLogger("sslhub")

STORE_FORMAT_VERSION = 1
SPLITS = ("train", "held_out", "eval_train", "eval_test")
LABELED_SPLITS = ("eval_train", "eval_test")
META_FILE = "meta.json"
#: Characters of text tokenized per ``encode_batch`` call: hundreds of documents, enough to keep
#: the tokenizer's threads busy, while one chunk's documents and token arrays stay near 1 MB.
ENCODE_CHUNK_CHARS = 1 << 16


class TokenSequences(Dataset):
    """Token-id sequences stored flat (picklable, deterministic).

    The arrays may be in memory or ``numpy.memmap`` views of a store's files; a memory-mapped
    dataset pickles as its file names (cheap for DataLoader workers started with ``spawn``).

    Args:
        ids: ``[total]`` all sequences concatenated (any integer dtype).
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

    def __getstate__(self) -> dict[str, Any]:
        return {name: _pickled_array(getattr(self, name)) for name in ("ids", "offsets", "labels")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, _unpickled_array(value))


def _pickled_array(array: np.ndarray | None) -> Any:
    if isinstance(array, np.memmap) and array.filename is not None:
        return ("memmap", array.filename, array.dtype.str, array.shape)
    return array


def _unpickled_array(value: Any) -> np.ndarray | None:
    if isinstance(value, tuple) and value[:1] == ("memmap",):
        _, filename, dtype, shape = value
        return np.memmap(filename, dtype=np.dtype(dtype), mode="r", shape=shape)
    return value


@dataclass(frozen=True)
class SampleLayout:
    """How tokenized documents become samples.

    Attributes:
        max_length: tokens per sample at most, special tokens included.
        pack: concatenate documents (``[SEP]`` after each) and cut the stream into
            ``[CLS]`` + ``max_length - 1`` tokens; otherwise ``[CLS] chunk [SEP]`` per piece of
            each document.
        cls_id, sep_id: the tokenizer's ``[CLS]``/``[SEP]`` ids, ``None`` where it lacks one.
        vocab_size: decides the id dtype (uint16 up to 65536 entries, else int32).
    """

    max_length: int
    pack: bool
    cls_id: int | None
    sep_id: int | None
    vocab_size: int

    @property
    def id_dtype(self) -> np.dtype:
        return np.dtype(np.uint16 if self.vocab_size <= 1 << 16 else np.int32)

    @property
    def head(self) -> list[int]:
        return [self.cls_id] if self.cls_id is not None else []

    @property
    def tail(self) -> list[int]:
        return [self.sep_id] if self.sep_id is not None else []

    @cached_property
    def head_ids(self) -> np.ndarray:
        """:attr:`head` as an array of :attr:`id_dtype` (built once: samples are cut chunk by chunk)."""
        return np.asarray(self.head, dtype=self.id_dtype)

    @cached_property
    def tail_ids(self) -> np.ndarray:
        """:attr:`tail` as an array of :attr:`id_dtype`."""
        return np.asarray(self.tail, dtype=self.id_dtype)

    @property
    def content_length(self) -> int:
        """Document tokens per unpacked (or labeled) sample, between ``[CLS]`` and ``[SEP]``."""
        return self.max_length - len(self.head) - len(self.tail)


class SplitWriter:
    """Appends samples of one split to files in ``directory``, or to memory when it is ``None``."""

    def __init__(self, name: str, directory: Path | None, id_dtype: np.dtype, labeled: bool):
        self.name = name
        self.id_dtype = id_dtype
        self.labeled = labeled
        self.num_samples = 0
        self.num_tokens = 0
        self._files: dict[str, Any] | None = None
        self._chunks: dict[str, list[np.ndarray]] = {"ids": [], "offsets": [], "labels": []}
        if directory is not None:
            kinds = ("ids", "offsets", "labels") if labeled else ("ids", "offsets")
            self._files = {kind: open(directory / f"{name}.{kind}", "wb") for kind in kinds}
        self._write("offsets", np.zeros(1, dtype=np.int64))

    def _write(self, kind: str, array: np.ndarray) -> None:
        if self._files is None:
            self._chunks[kind].append(array)
        else:
            self._files[kind].write(array.tobytes())

    def add(self, ids: np.ndarray, lengths: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Append ``len(lengths)`` samples whose ids are ``ids`` concatenated (and their labels)."""
        if len(lengths) == 0:
            return
        if (labels is not None) != self.labeled:
            raise ValueError(f"split {self.name}: labels must be given exactly when the split is labeled")
        ends = self.num_tokens + np.cumsum(lengths, dtype=np.int64)
        self._write("ids", np.ascontiguousarray(ids, dtype=self.id_dtype))
        self._write("offsets", ends)
        if labels is not None:
            self._write("labels", np.asarray(labels, dtype=np.int64))
        self.num_samples += len(lengths)
        self.num_tokens = int(ends[-1])

    def close(self) -> TokenSequences | None:
        """Finish the split: the in-memory dataset, or ``None`` when written to files."""
        if self._files is not None:
            for handle in self._files.values():
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
            return None
        ids = np.concatenate(self._chunks["ids"]) if self._chunks["ids"] else np.zeros(0, dtype=self.id_dtype)
        labels = None
        if self.labeled:
            labels = np.concatenate(self._chunks["labels"]) if self._chunks["labels"] else np.zeros(0, np.int64)
        return TokenSequences(ids, np.concatenate(self._chunks["offsets"]), labels)


class SampleCutter:
    """Cuts one side's tokenized documents into samples, carrying a packed stream across chunks.

    The samples are exactly those of cutting the whole side at once: packed, the stream of
    every document followed by ``[SEP]`` is cut every ``max_length - 1`` tokens and each piece
    gets a ``[CLS]`` (the last piece may be shorter); unpacked, each document is cut every
    ``content_length`` tokens and each piece becomes ``[CLS] piece [SEP]``.
    """

    def __init__(self, writer: SplitWriter, layout: SampleLayout):
        self.writer = writer
        self.layout = layout
        self._carry = np.zeros(0, dtype=layout.id_dtype)

    def add_documents(self, documents: list[np.ndarray]) -> None:
        """Cut the token arrays of a chunk of documents (all non-empty) and append the samples."""
        if not documents:
            return
        if self.layout.pack:
            self._add_packed(documents)
        else:
            self._add_unpacked(documents)

    def _add_packed(self, documents: list[np.ndarray]) -> None:
        layout, head = self.layout, self.layout.head_ids
        stream = np.concatenate([self._carry, *(piece for tokens in documents for piece in (tokens, layout.tail_ids))])
        width = layout.max_length - len(head)
        rows = len(stream) // width
        if rows:
            samples = np.empty((rows, layout.max_length), dtype=layout.id_dtype)
            samples[:, : len(head)] = head
            samples[:, len(head) :] = stream[: rows * width].reshape(rows, width)
            self.writer.add(samples.ravel(), np.full(rows, layout.max_length, dtype=np.int64))
        self._carry = stream[rows * width :].copy()

    def _add_unpacked(self, documents: list[np.ndarray]) -> None:
        head, tail, width = self.layout.head_ids, self.layout.tail_ids, self.layout.content_length
        pieces = [tokens[i : i + width] for tokens in documents for i in range(0, len(tokens), width)]
        self.writer.add(
            np.concatenate([part for piece in pieces for part in (head, piece, tail)]),
            np.fromiter((len(head) + len(p) + len(tail) for p in pieces), dtype=np.int64, count=len(pieces)),
        )

    def finish(self) -> None:
        """Append the packed stream's last, shorter sample."""
        if self.layout.pack and len(self._carry):
            head = self.layout.head_ids
            self.writer.add(np.concatenate([head, self._carry]), np.array([len(head) + len(self._carry)]))
            self._carry = self._carry[:0]


@dataclass
class BuiltSamples:
    """What :func:`write_samples` produced.

    Attributes:
        meta: JSON-able facts (see the module docstring); ``meta["documents"]`` counts the
            training and held-out documents read, ``meta["content_crc"]`` is a CRC32 of their
            texts in source order.
        datasets: the four splits when built in memory; ``None`` when written to files.
    """

    meta: dict[str, Any]
    datasets: dict[str, TokenSequences] | None


def _chunks(documents: Iterable[Document], max_chars: int) -> Iterator[list[Document]]:
    chunk: list[Document] = []
    chars = 0
    for document in documents:
        chunk.append(document)
        chars += len(document.text)
        if chars >= max_chars:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


def write_samples(
    documents: Iterable[Document],
    tokenizer: Tokenizer,
    layout: SampleLayout,
    held_out_fraction: float,
    skipped: SkipCounts,
    directory: Path | None = None,
    chunk_chars: int | None = None,
) -> BuiltSamples:
    """Tokenize ``documents`` chunk by chunk into the four splits (files in ``directory``, or memory).

    Documents that produce no tokens are left out (and counted). Labeled samples are one per
    labeled document, truncated to ``layout.content_length`` and wrapped in ``[CLS]``/``[SEP]``;
    labels are class indices into the sorted class names.

    Args:
        documents: read lazily; iterated once.
        tokenizer: encodes without special tokens (they are added here, so documents can be packed).
        layout: how documents become samples.
        held_out_fraction: passed to :func:`~sslhub_text.corpus.is_held_out`.
        skipped: the source's skip counter; its counts are copied into ``meta`` at the end.
        directory: an empty folder for the split files; ``None`` keeps everything in memory.
        chunk_chars: characters of text per tokenizer call (bounds the memory of one chunk);
            ``None``: :data:`ENCODE_CHUNK_CHARS`.
    """
    router = _SampleRouter(layout, held_out_fraction, directory)
    for chunk in _chunks(documents, chunk_chars or ENCODE_CHUNK_CHARS):
        encodings = tokenizer.encode_batch([d.text for d in chunk], add_special_tokens=False)
        router.add_chunk(chunk, [np.asarray(e.ids, dtype=layout.id_dtype) for e in encodings])
    datasets, meta = router.finish(skipped)
    return BuiltSamples(meta, None if directory is not None else datasets)  # type: ignore[arg-type]


class _SampleRouter:
    """Sends each tokenized document to its side's samples and, when labeled, to its side's probe split."""

    def __init__(self, layout: SampleLayout, held_out_fraction: float, directory: Path | None):
        self.layout = layout
        self.held_out_fraction = held_out_fraction
        self.directory = directory
        self.writers = {name: SplitWriter(name, directory, layout.id_dtype, name in LABELED_SPLITS) for name in SPLITS}
        self.cutters = {side: SampleCutter(self.writers[side], layout) for side in ("train", "held_out")}
        self.label_codes: dict[str, int] = {}  # first-seen order; remapped to sorted order at the end
        self.document_counts = {"train": 0, "held_out": 0}
        self.content_crc = 0
        self.without_tokens = 0

    def add_chunk(self, chunk: list[Document], token_arrays: list[np.ndarray]) -> None:
        """Route one chunk's documents, given each one's token ids (no special tokens)."""
        unlabeled: dict[str, list[np.ndarray]] = {"train": [], "held_out": []}
        labeled: dict[str, tuple[list[np.ndarray], list[int]]] = {"train": ([], []), "held_out": ([], [])}
        for document, tokens in zip(chunk, token_arrays, strict=True):
            self.content_crc = zlib.crc32(document.text.encode("utf-8"), self.content_crc)
            side = "held_out" if is_held_out(document, self.held_out_fraction) else "train"
            self.document_counts[side] += 1
            code = (
                None if document.label is None else self.label_codes.setdefault(document.label, len(self.label_codes))
            )
            if not len(tokens):
                self.without_tokens += 1
                continue
            unlabeled[side].append(tokens)
            if code is not None:
                sample = [self.layout.head_ids, tokens[: self.layout.content_length], self.layout.tail_ids]
                labeled[side][0].append(np.concatenate(sample))
                labeled[side][1].append(code)
        for side, documents in unlabeled.items():
            self.cutters[side].add_documents(documents)
            samples, codes = labeled[side]
            if samples:
                lengths = np.fromiter((len(s) for s in samples), dtype=np.int64, count=len(samples))
                split = "eval_train" if side == "train" else "eval_test"
                self.writers[split].add(np.concatenate(samples), lengths, np.asarray(codes, dtype=np.int64))

    def finish(self, skipped: SkipCounts) -> tuple[dict[str, TokenSequences | None], dict[str, Any]]:
        """Close every split, renumber labels to sorted class order; the splits and ``meta``."""
        for cutter in self.cutters.values():
            cutter.finish()
        class_names = sorted(self.label_codes)
        datasets = {name: writer.close() for name, writer in self.writers.items()}
        # Labels were written as first-seen codes; renumber them so class i is class_names[i].
        to_sorted = np.zeros(max(len(self.label_codes), 1), dtype=np.int64)
        for name, code in self.label_codes.items():
            to_sorted[code] = class_names.index(name)
        for split in LABELED_SPLITS:
            dataset = datasets[split]
            if dataset is not None:
                assert dataset.labels is not None
                dataset.labels = to_sorted[dataset.labels]
            elif self.directory is not None and self.writers[split].num_samples:
                _renumber_labels(self.directory / f"{split}.labels", to_sorted)
        meta = {
            "format": STORE_FORMAT_VERSION,
            "id_dtype": self.layout.id_dtype.str,
            "splits": {
                name: {"samples": writer.num_samples, "tokens": writer.num_tokens}
                for name, writer in self.writers.items()
            },
            "class_names": class_names,
            "documents": self.document_counts,
            "documents_without_tokens": self.without_tokens,
            "content_crc": self.content_crc,
            "skipped": dict(skipped.counts),
        }
        return datasets, meta


def _renumber_labels(path: Path, to_sorted: np.ndarray, block: int = 1 << 20) -> None:
    labels = np.memmap(path, dtype=np.int64, mode="r+")
    for start in range(0, len(labels), block):
        labels[start : start + block] = to_sorted[labels[start : start + block]]
    labels.flush()
    del labels


class StoreError(Exception):
    """A store directory that is incomplete or does not match its ``meta.json``."""


def open_store(directory: Path, key: str) -> tuple[dict[str, TokenSequences], dict[str, Any]]:
    """Check a finished store and map its splits read-only.

    Raises:
        StoreError: ``meta.json`` is missing or unreadable, is for another key or format, or a
            file's size or offsets disagree with it.
    """
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise StoreError(f"no readable {META_FILE} ({error.__class__.__name__})") from None
    if meta.get("format") != STORE_FORMAT_VERSION or meta.get("key") != key:
        raise StoreError(f"{META_FILE} is for format {meta.get('format')}, key {meta.get('key')}")
    id_dtype = np.dtype(meta["id_dtype"])
    datasets = {}
    for name in SPLITS:
        counts = meta["splits"][name]
        samples, tokens = int(counts["samples"]), int(counts["tokens"])
        ids = _map(directory / f"{name}.ids", id_dtype, tokens)
        offsets = _map(directory / f"{name}.offsets", np.dtype(np.int64), samples + 1)
        if offsets[0] != 0 or offsets[-1] != tokens or np.any(offsets[1:] < offsets[:-1]):
            raise StoreError(f"{name}.offsets does not describe {tokens} tokens in order")
        labels = None
        if name in LABELED_SPLITS:
            labels = _map(directory / f"{name}.labels", np.dtype(np.int64), samples)
            if samples and (labels.min() < 0 or labels.max() >= len(meta["class_names"])):
                raise StoreError(f"{name}.labels holds class indices outside the {len(meta['class_names'])} classes")
        datasets[name] = TokenSequences(ids, offsets, labels)
    return datasets, meta


def _map(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    try:
        size = path.stat().st_size
    except OSError:
        raise StoreError(f"{path.name} is missing") from None
    if size != count * dtype.itemsize:
        raise StoreError(f"{path.name} holds {size} bytes, expected {count * dtype.itemsize}")
    if count == 0:  # an empty file cannot be memory-mapped
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) while the block runs.

    Uses ``fcntl.flock``, which the system releases if the process dies; where ``fcntl`` does
    not exist (Windows) the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def cached_store(
    root: Path, key: str, build: Callable[[Path], dict[str, Any]]
) -> tuple[dict[str, TokenSequences], dict[str, Any], bool]:
    """Open the store ``root/key``, building it first if it is missing, partial or corrupt.

    Args:
        root: folder holding stores (created if needed).
        key: names the store; everything that changes the samples must change the key.
        build: writes the split files into the empty folder it is given and returns the
            ``meta`` of :class:`BuiltSamples`; it may raise, and nothing is kept then.

    Returns:
        ``(datasets, meta, reused)``.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    with exclusive_lock(root / f"{key}.lock"):
        if final.exists():
            try:
                datasets, meta = open_store(final, key)
                return datasets, meta, True
            except StoreError as error:
                logger.warning("text: token store %s is unusable (%s); rebuilding it", final, error)
                shutil.rmtree(final)
        # Holding the lock, any partial folder of this key is an interrupted build's leftover.
        for leftover in root.glob(f"{key}.partial-*"):
            logger.warning("text: removing %s, left by an interrupted token store build", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
        # mkdir (not mkdtemp, which is private to the owner) so a shared cache_dir keeps the umask's permissions.
        partial = root / f"{key}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        partial.mkdir()
        try:
            meta = {**build(partial), "key": key}
            with open(partial / META_FILE, "w", encoding="utf-8") as handle:
                json.dump(meta, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        datasets, meta = open_store(final, key)
        return datasets, meta, False
