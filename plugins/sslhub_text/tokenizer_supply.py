"""Where a trained text tokenizer comes from, first found first: the copy a run saved (a resumed
run), the copy a ``cache_dir`` keeps for the corpus and settings, or a training on the corpus
(whose result the cache then keeps). A recipe's ``tokenizer: {type: local}`` is simply loaded."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer

from sslhub_text.tokenizer import load_tokenizer, train_tokenizer

if TYPE_CHECKING:
    from sslhub_text.params import TrainTokenizer

logger = logging.getLogger("sslhub")


def supply_tokenizer(
    train: Callable[[], Tokenizer],
    *,
    saved: Path | None = None,
    cached: Path | None = None,
) -> Tokenizer:
    """The tokenizer at ``saved``, else at ``cached``, else ``train()``'s.

    A trained tokenizer is written to ``cached`` (when given) atomically, so a concurrent run reads
    a whole file or none; writing ``saved`` is the caller's, with the rest of its run directory.
    """
    if saved is not None and saved.is_file():
        logger.info("text: reusing the tokenizer saved at %s", saved)
        return load_tokenizer(saved)
    if cached is not None and cached.is_file():
        logger.info("text: reusing the tokenizer trained on this corpus at %s", cached)
        return load_tokenizer(cached)
    tokenizer = train()
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        tokenizer.save(str(partial))
        os.replace(partial, cached)
    return tokenizer


def train_as_specified(texts: Iterable[str], spec: TrainTokenizer) -> Tokenizer:
    """:func:`sslhub_text.tokenizer.train_tokenizer` with a recipe's ``tokenizer: {type: train}`` settings."""
    return train_tokenizer(
        texts,
        vocab_size=spec.vocab_size,
        lowercase=spec.lowercase,
        algorithm=spec.algorithm,
        min_frequency=spec.min_frequency,
    )
