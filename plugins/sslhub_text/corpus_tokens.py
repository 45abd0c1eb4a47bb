"""A text corpus tokenized into the text modality's four splits (train, held-out, and the labeled
evaluation's two sides): in memory, or in a disk-backed token store named by everything that
changes the samples, which a later run with the same name reuses instead of tokenizing again."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import Tokenizer

from sslhub_text.corpus import SkipCounts
from sslhub_text.token_store import STORE_FORMAT_VERSION, SampleLayout, TokenSequences, cached_store, write_samples

if TYPE_CHECKING:
    from sslhub_text.params import TextParams

logger = logging.getLogger("sslhub")


@dataclass(frozen=True)
class TokenizedCorpus:
    """The splits' samples and what the build recorded (``meta``: counts, skips, class names, store key)."""

    datasets: dict[str, TokenSequences]
    meta: dict[str, Any]


def tokenize_corpus(
    params: TextParams, tokenizer: Tokenizer, layout: SampleLayout, store_root: Path | None
) -> TokenizedCorpus:
    """Tokenize ``params.source`` in memory (``store_root`` None) or into a token store under ``store_root``.

    Raises:
        ValueError: the corpus has no usable training document (:func:`report_corpus`).
    """

    def build(directory: Path | None):
        skipped = SkipCounts()
        documents = params.source.read(skipped)
        built = write_samples(documents, tokenizer, layout, params.held_out_fraction, skipped, directory)
        report_corpus(built.meta, params.source.description())
        return built

    if store_root is None:
        built = build(None)
        assert built.datasets is not None
        return TokenizedCorpus(built.datasets, built.meta)
    key = store_key(params, tokenizer)
    datasets, meta, reused = cached_store(store_root, key, lambda directory: build(directory).meta)
    store = store_root / meta["key"]
    if reused:
        logger.info("text: reusing the token store at %s", store)
        report_corpus(meta, params.source.description())
    train = meta["splits"]["train"]
    logger.info("text: token store %s: %d training samples, %d tokens", store, train["samples"], train["tokens"])
    return TokenizedCorpus(datasets, meta)


def report_corpus(meta: dict[str, Any], where: str) -> None:
    """Warn about what was skipped; refuse a corpus with no usable training document."""
    skipped = SkipCounts()
    for reason, count in meta["skipped"].items():
        skipped.add(reason, count)
    if skipped.total():
        logger.warning("text: skipped %d items from %s (%s)", skipped.total(), where, skipped.describe())
    if meta["documents_without_tokens"]:
        logger.warning("text: skipped %d documents that produced no tokens", meta["documents_without_tokens"])
    documents = meta["documents"]
    if not documents["train"] + documents["held_out"]:
        raise ValueError(f"no usable text documents in {where}")
    if not documents["train"]:
        raise ValueError(f"all {documents['held_out']} documents of {where} fell into the held-out part")


def store_key(params: TextParams, tokenizer: Tokenizer) -> str:
    """Names the token store: changes with anything that changes the samples.

    The corpus enters through its source's ``identity()`` (files: their paths, sizes and
    modification times); the tokenizer through its full serialisation.
    """
    digest = hashlib.sha256()
    settings = {
        "format": STORE_FORMAT_VERSION,
        "source": params.source.model_dump(),
        "max_length": params.max_length,
        "held_out_fraction": params.held_out_fraction,
        "pack": params.pack,
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(tokenizer.to_str().encode())
    digest.update(params.source.identity().encode())
    return f"text-{digest.hexdigest()[:20]}"
