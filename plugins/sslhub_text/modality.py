"""The ``text`` modality: documents -> token ids, dynamically padded batches.

Samples are ``{"input_ids": int64 [L], "attention_mask": int64 [L]}`` with ``L <= max_length``
(variable); labeled evaluation samples add ``"label"`` (int64 scalar). :meth:`TextModality.collate`
pads to the longest sample of the batch with the tokenizer's pad id, on the right.

:meth:`TextModality.prepare` reads the corpus lazily, three times at most: twice to train the
tokenizer (its characters first, so that the tokenizer is the same in every process; or once, to
draw a bounded sample), once to tokenize it chunk by chunk into flat arrays
(:mod:`sslhub_text.token_store`). The document texts are never all in
memory. The arrays stay in memory by default; with ``streaming: true`` they are written to a
disk-backed token store and memory-mapped, so a corpus larger than memory trains the same way
(the datasets stay map-style: seeded order, exact resume and rank sharding are unchanged), and
a resumed run reuses the store instead of tokenizing again.

What a recipe may set (:class:`TextParams`: the source, the tokenizer, the sample settings) is
:mod:`sslhub_text.params`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import Tensor

from sslhub import Batch, EvalSplit, Modality, ModalityInfo, Params
from sslhub_text.corpus import Document, SkipCounts, is_held_out, iter_file_documents, sample_documents
from sslhub_text.corpus_tokens import tokenize_corpus
from sslhub_text.params import (
    DefaultSource,
    FilesSource,
    LocalTokenizer,
    TextParams,
    TrainTextTokenizer,
    TrainTokenizer,
    grouped_document_split,
)
from sslhub_text.token_store import SampleLayout, TokenSequences, exclusive_lock
from sslhub_text.tokenizer import (
    CONTINUATION_PREFIX,
    TOKENIZER_FILE,
    RereadableTexts,
    SpecialTokens,
    continuation_token_ids,
    load_tokenizer,
    save_beside_model,
    token_input_spec,
)
from sslhub_text.tokenizer_supply import supply_tokenizer, train_as_specified

# The schema's names stay importable from here, where code written before sslhub_text.params existed finds them.
__all__ = [
    "DefaultSource",
    "FilesSource",
    "LocalTokenizer",
    "TextModality",
    "TextParams",
    "TokenSequences",
    "TrainTextTokenizer",
    "TrainTokenizer",
    "pad_batch",
]

logger = logging.getLogger("sslhub")

#: Default folder, inside the run directory, for the token store of ``streaming: true``.
STORE_FOLDER = "token_store"


#: columns of the bag-of-words baseline at most; larger vocabularies share columns (id modulo this).
BAG_OF_WORDS_WIDTH = 2048


def bag_of_words(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, vocab_size: int, ignored_ids: Sequence[int] = ()
) -> torch.Tensor:
    """Log-scaled token counts per sequence, L2-normalised: the text raw-input baseline.

    No statistics are fitted (no IDF): the linear probes standardise each column on the
    probe-train side, which weighs rare and common tokens alike, and kNN compares directions.

    Args:
        input_ids: ``[B, L]`` int token ids; attention_mask: ``[B, L]``, 1 at real tokens.
        vocab_size: size of the vocabulary.
        ignored_ids: ids not counted (special tokens).

    Returns:
        float32 ``[B, min(vocab_size, BAG_OF_WORDS_WIDTH)]`` ``log(1 + count)``, each row of unit length
        (an empty row stays zero).
    """
    width = min(vocab_size, BAG_OF_WORDS_WIDTH)
    counted = attention_mask.bool() & ~torch.isin(
        input_ids, torch.tensor(list(ignored_ids), dtype=input_ids.dtype, device=input_ids.device)
    )
    counts = torch.zeros(input_ids.shape[0], width, device=input_ids.device)
    counts.scatter_add_(1, input_ids.remainder(width), counted.float())
    return torch.nn.functional.normalize(counts.log1p(), dim=1)


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
            the tokenizer are functions of the data, see
            :func:`sslhub_text.tokenizer.train_tokenizer`).
    """

    input_names = ("input_ids", "attention_mask")

    def __init__(self, params: TextParams, context: Any = None):
        self.params = params
        self._tokenizer: Tokenizer | None = None
        self._special: SpecialTokens | None = None
        self._class_names: list[str] = []
        self._datasets: dict[str, TokenSequences] = {}
        self._corpus_facts: dict[str, Any] = {}
        self._prepared_dir: Path | None = None
        self._temporary_store: tempfile.TemporaryDirectory | None = None

    # ----------------------------------------------------------------- data loading
    def prepare(self, run_dir: Path | None) -> None:
        """Train or load the tokenizer, then tokenize the corpus into samples.

        With a ``run_dir`` the tokenizer is saved there as ``tokenizer.json`` (the exported
        model's preprocessing points at it); a trained tokenizer already present there (a
        resumed run) is loaded instead of retrained. Processes sharing a ``run_dir`` (ranks
        under ``torchrun``) prepare one after the other, so they share one tokenizer and one
        token store.
        """
        if self._prepared_for(run_dir):
            return
        saved = _tokenizer_file(run_dir)
        lock = exclusive_lock(Path(run_dir) / ".text-prepare.lock") if run_dir is not None else contextlib.nullcontext()
        with lock:
            if self._tokenizer is None:
                self._use_tokenizer(self._train_tokenizer, saved, cached=self._cached_tokenizer_path())
                try:
                    self._tokenize_corpus(run_dir)
                except BaseException:
                    self._tokenizer = self._special = None  # not prepared: a later call starts over
                    raise
            self._keep_tokenizer(saved)

    def _prepared_for(self, run_dir: Path | None) -> bool:
        """Whether there is a tokenizer and, given a ``run_dir``, it is already kept in that one."""
        return self._tokenizer is not None and (run_dir is None or self._prepared_dir == Path(run_dir))

    def _ensure_prepared(self) -> None:
        if self._tokenizer is None:
            self.prepare(None)

    def _use_tokenizer(
        self, train: Callable[[TrainTextTokenizer], Tokenizer], saved: Path | None, cached: Path | None = None
    ) -> None:
        """The recipe's local tokenizer, else the one :func:`supply_tokenizer` finds or ``train`` makes."""
        spec = self.params.tokenizer
        if isinstance(spec, LocalTokenizer):
            self._tokenizer = load_tokenizer(spec.path)
        else:
            self._tokenizer = supply_tokenizer(lambda: train(spec), saved=saved, cached=cached)
        self._special = SpecialTokens.of(self._tokenizer)

    def _keep_tokenizer(self, saved: Path | None) -> None:
        """Write the tokenizer into the run directory (the exported model's preprocessing points at it)."""
        if saved is None:
            return
        saved.parent.mkdir(parents=True, exist_ok=True)
        if not saved.is_file():
            self._tokenizer.save(str(saved))
        self._prepared_dir = saved.parent

    def _train_tokenizer(self, spec: TrainTextTokenizer) -> Tokenizer:
        fraction = self.params.held_out_fraction

        def training() -> Iterator[Document]:
            # Skips are counted (and reported) by the tokenizing pass, not these.
            return (d for d in self.params.source.read(SkipCounts()) if not is_held_out(d, fraction))

        # Read twice (streamed, not held), so the tokenizer is the same in every process.
        texts: Iterable[str] = RereadableTexts(lambda: (d.text for d in training()))
        if spec.max_documents is not None:
            texts = [d.text for d in sample_documents(training(), spec.max_documents)]
        return train_as_specified(texts, spec)

    def _layout(self) -> SampleLayout:
        special = self._special
        assert special is not None and self._tokenizer is not None
        return SampleLayout(
            max_length=self.params.max_length,
            pack=self.params.pack,
            cls_id=special.cls,
            sep_id=special.sep,
            vocab_size=self._tokenizer.get_vocab_size(with_added_tokens=True),
        )

    def _tokenize_corpus(self, run_dir: Path | None) -> None:
        """Fill the four splits, in memory or (``streaming``) from a disk-backed token store."""
        assert self._tokenizer is not None
        store_root = self._store_root(run_dir) if self.params.streaming else None
        corpus = tokenize_corpus(self.params, self._tokenizer, self._layout(), store_root)
        # The corpus is tokenized; DataLoader workers forked from now on only index arrays, so
        # the tokenizers' thread pool is not needed there (and would warn after the fork).
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self._datasets = corpus.datasets
        self._corpus_facts = corpus.meta
        self._class_names = list(corpus.meta["class_names"])

    def _store_root(self, run_dir: Path | None) -> Path:
        if self.params.cache_dir is not None:
            return Path(self.params.cache_dir)
        if run_dir is not None:
            return Path(run_dir) / STORE_FOLDER
        # No run directory (tests, throwaway builds): a store that lives as long as this object.
        self._temporary_store = tempfile.TemporaryDirectory(prefix="sslhub-text-store-")
        return Path(self._temporary_store.name)

    def _cached_tokenizer_path(self) -> Path | None:
        """Where ``cache_dir`` keeps the tokenizer trained on this corpus with these settings.

        Later runs on the same corpus load it instead of training again (a pass or two over
        the corpus), and it is the tokenizer the token stores in ``cache_dir`` were built with
        (one trained by an older release, which could pick other merges, stays in use).
        """
        if self.params.cache_dir is None or not isinstance(self.params.tokenizer, TrainTextTokenizer):
            return None
        digest = hashlib.sha256()
        settings = {
            "source": self.params.source.model_dump(mode="json"),
            "held_out_fraction": self.params.held_out_fraction,
            "tokenizer": self.params.tokenizer.model_dump(mode="json"),
        }
        digest.update(json.dumps(settings, sort_keys=True).encode())
        digest.update(self.params.source.identity().encode())
        return Path(self.params.cache_dir) / "tokenizers" / f"tokenizer-{digest.hexdigest()[:20]}.json"

    def _wrap(self, tokens: list[int]) -> list[int]:
        """``[CLS] tokens [SEP]`` (whichever of the two the tokenizer has)."""
        layout = self._layout()
        return layout.head + tokens + layout.tail

    def _content_length(self) -> int:
        return self._layout().content_length

    # ----------------------------------------------------------------- Modality API
    @property
    def tokenizer(self) -> Tokenizer:
        """The HF ``tokenizers.Tokenizer`` (trained on first use if :meth:`prepare` was not called)."""
        self._ensure_prepared()
        assert self._tokenizer is not None
        return self._tokenizer

    def train_dataset(self) -> TokenSequences:
        self._ensure_prepared()
        return self._datasets["train"]

    def held_out_dataset(self) -> TokenSequences | None:
        self._ensure_prepared()
        held_out = self._datasets["held_out"]
        return held_out if len(held_out) else None

    def eval_split(self) -> EvalSplit | None:
        """Documents with labels (pydoc: documentation chapter; files: ``label_field``), else ``None``.

        With ``group_field`` the labeled documents are split by group instead (``held_out_fraction``
        of each class on the test side, seed 0), so no group straddles the two sides.
        """
        self._ensure_prepared()
        source = self.params.source
        if isinstance(source, FilesSource) and source.group_field is not None:
            return self._document_split(source.documents(), self.params.held_out_fraction, 0)
        train, test = self._datasets["eval_train"], self._datasets["eval_test"]
        if not self._class_names or len(train) == 0 or len(test) == 0:
            return None
        return EvalSplit(train=train, test=test, class_names=tuple(self._class_names))

    def labeled_split(self, source: Params, test_fraction: float, seed: int) -> EvalSplit:
        """Labeled JSONL documents tokenized with this run's tokenizer; grouped when the source has ``group_field``."""
        if not isinstance(source, FilesSource) or source.label_field is None:
            raise ValueError("a text evaluation source must be .jsonl files with a label_field")
        self._ensure_prepared()
        if source.group_field is not None:
            documents = source.documents()
        else:
            found = iter_file_documents(
                Path(source.path), source.text_field, source.label_field, source.one_document_per
            )
            documents = [d for d in found if d.label is not None]
        if not documents:
            raise ValueError(f"no labeled documents in {source.path}")
        return self._document_split(documents, test_fraction, seed, source=source.path)

    def _document_split(
        self, documents: list[Document], test_fraction: float, seed: int, source: str = ""
    ) -> EvalSplit:
        """One ``[CLS] text [SEP]`` sample per document (truncated like the recipe's own labeled samples)."""
        train, test, class_names, groups = grouped_document_split(documents, test_fraction, seed)
        encodings = self.tokenizer.encode_batch([d.text for d in documents], add_special_tokens=False)
        samples = [self._wrap(e.ids[: self._content_length()]) for e in encodings]
        labels = [class_names.index(d.label) for d in documents]

        def side(indices: list[int]) -> TokenSequences:
            return TokenSequences.from_lists([samples[i] for i in indices], [labels[i] for i in indices])

        return EvalSplit(side(train), side(test), tuple(class_names), groups=groups, source=source)

    # ----------------------------------------------------------------- as a composite's part
    def fit_part(self, items: Sequence[Any], run_dir: Path | None) -> None:
        """As a composite's part (``image_text``): the tokenizer trained on ``items``, the composite's
        training texts (or loaded: ``tokenizer: {type: local}``), instead of on ``data.source``.

        With a ``run_dir`` it is saved there as ``tokenizer.json``; one already there (a resumed
        run) is reused rather than retrained. ``tokenizer.max_documents`` does not apply.
        """
        if self._prepared_for(run_dir):
            return
        saved = _tokenizer_file(run_dir)
        if self._tokenizer is None:
            self._use_tokenizer(lambda spec: train_as_specified([str(text) for text in items], spec), saved)
        self._keep_tokenizer(saved)

    def part_dataset(self, items: Sequence[Any]) -> TokenSequences:
        """As a composite's part: one ``[CLS] text [SEP]`` sample per text, truncated to ``max_length``.

        Samples: ``{"input_ids": int64 [L], "attention_mask": int64 [L]}``, ``L <= max_length``.
        """
        if self._tokenizer is None:
            raise ValueError("the text part has no tokenizer yet: call fit_part before part_dataset")
        # Tokenize in the main process; forked DataLoader workers then only index arrays.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        encodings = self._tokenizer.encode_batch([str(text) for text in items], add_special_tokens=False)
        return TokenSequences.from_lists([self._wrap(e.ids[: self._content_length()]) for e in encodings])

    def labeled_source(self, path: Path, label: str | None = None, group: str | None = None) -> dict[str, Any]:
        """``.jsonl`` files (a file or a folder) with a ``label`` field unless named; ``group`` names a field."""
        return {"type": "files", "path": str(path), "label_field": label or "label", "group_field": group}

    def collate(self, samples: list[Batch]) -> Batch:
        self._ensure_prepared()
        assert self._special is not None
        return pad_batch(samples, self._special.pad, self.params.pad_to_multiple_of)

    def raw_features(self, batch: Batch) -> torch.Tensor:
        """The raw-input baseline: a bag of words over token ids (see :func:`bag_of_words`), special tokens left out.

        Returns:
            float32 ``[B, min(vocab_size, BAG_OF_WORDS_WIDTH)]``.
        """
        info = self.info()
        return bag_of_words(batch["input_ids"], batch["attention_mask"], info.vocab_size, info.special_token_ids)

    def example_batch(self, batch_size: int, device: torch.device | str = "cpu") -> Batch:
        """``batch_size`` random non-special token sequences of ``max_length``, wrapped in [CLS]/[SEP]."""
        info = self.info()
        generator = torch.Generator().manual_seed(0)
        specials = torch.tensor(info.special_token_ids, dtype=torch.int64)
        allowed = torch.arange(info.vocab_size)[~torch.isin(torch.arange(info.vocab_size), specials)]
        body = allowed[torch.randint(len(allowed), (batch_size, self._content_length()), generator=generator)]
        rows = [torch.tensor(self._wrap(row.tolist()), dtype=torch.int64) for row in body]
        input_ids = torch.stack(rows)
        return {"input_ids": input_ids.to(device), "attention_mask": torch.ones_like(input_ids).to(device)}

    def augmentation_samples(self, batch: Batch, views: list[Batch]) -> dict[str, Tensor | str]:
        """``{"views": str}``: each sample decoded, then each of its views, so masks, deletions and
        replacements read as text (``[MASK]`` and ``[UNK]`` stay visible; padding, ``[CLS]`` and
        ``[SEP]`` are left out).

        Args:
            batch: ``{"input_ids": int64 [n, L], "attention_mask": [n, L]}``; views: the same, augmented.
        """
        lines = []
        for index in range(batch["input_ids"].shape[0]):
            sample = self.decode_sample(batch, index)
            lines.append(f"sample {index + 1}: {sample}")
            for number, view in enumerate(views, start=1):
                if "input_ids" in view:
                    text = self.decode_sample(view, index)
                    lines.append(f"  view {number}: {'(the sample, unchanged)' if text == sample else text}")
        return {"views": "\n".join(lines) + "\n"}

    def decode_sample(self, batch: Batch, index: int, limit: int = 400) -> str:
        """Row ``index`` of ``batch`` as text (at most ``limit`` characters), without padding, [CLS] or [SEP]."""
        special = self._special
        assert special is not None and self._tokenizer is not None
        hidden = {special.pad, special.cls, special.sep} - {None}
        ids = batch["input_ids"][index][batch["attention_mask"][index].bool()].tolist()
        text = self._tokenizer.decode([i for i in ids if i not in hidden], skip_special_tokens=False)
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def info(self) -> ModalityInfo:
        """Vocabulary facts for encoders and objectives.

        Fields: ``vocab_size``, ``pad_token_id``, ``mask_token_id``, ``cls_token_id``,
        ``sep_token_id``, ``unk_token_id`` (``None`` where the tokenizer lacks one),
        ``special_token_ids`` (never masked or augmented), ``max_length``,
        ``continuation_prefix`` (marks word-continuation pieces, for whole-word masking) and
        ``tokenizer_file``. The tokenizer object itself is :attr:`tokenizer`.
        """
        self._ensure_prepared()
        special = self._special
        assert special is not None and self._tokenizer is not None
        return ModalityInfo(
            vocab_size=self._tokenizer.get_vocab_size(with_added_tokens=True),
            pad_token_id=special.pad,
            mask_token_id=special.mask,
            cls_token_id=special.cls,
            sep_token_id=special.sep,
            unk_token_id=special.unk,
            special_token_ids=list(special.all_ids),
            max_length=self.params.max_length,
            continuation_prefix=CONTINUATION_PREFIX,
            tokenizer_file=TOKENIZER_FILE,
        )

    def continuation_token_ids(self) -> list[int]:
        """Vocabulary ids that continue a word (``##`` pieces), for whole-word masking."""
        return continuation_token_ids(self.tokenizer)

    def input_spec(self) -> dict[str, Any]:
        tokenizer = self.params.tokenizer
        lowercase = tokenizer.lowercase if isinstance(tokenizer, TrainTokenizer) else None
        return token_input_spec(self.info(), lowercase, "[CLS] text [SEP]")

    def write_export_files(self, out_dir: Path, input_names: Sequence[str]) -> list[str]:
        """The tokenizer, saved beside an exported model as ``tokenizer.json``."""
        self._ensure_prepared()
        assert self._tokenizer is not None
        return save_beside_model(self._tokenizer, out_dir)

    def fingerprint(self) -> str:
        """Document counts and a CRC32 of every document text plus the sample settings.

        The same data gives the same fingerprint with or without ``streaming``.
        """
        self._ensure_prepared()
        facts = self._corpus_facts
        settings = self.params.model_dump_json(exclude={"source", "streaming", "cache_dir"})
        crc = zlib.crc32(settings.encode(), facts["content_crc"])
        documents = facts["documents"]
        return f"text-{documents['train']}+{documents['held_out']}docs-{crc:08x}"


def _tokenizer_file(run_dir: Path | None) -> Path | None:
    """Where a run directory keeps its tokenizer (None without one)."""
    return Path(run_dir) / TOKENIZER_FILE if run_dir is not None else None
