"""sslhub_text.tokenizer: a tokenizer trained on the same texts is the same in every process."""

from __future__ import annotations

import os
import subprocess
import sys

from tokenizers import normalizers

from sslhub_text.tokenizer import SPECIAL_TOKENS, RereadableTexts, continuation_seeds, train_tokenizer

# Trains on the embedded pydoc paragraphs: enough frequency ties that, without the continuation
# seeds, three processes gave three different tokenizers (measured).
TRAIN_IN_A_PROCESS = """
import hashlib, sys
from sslhub_text.corpus import pydoc_documents
from sslhub_text.tokenizer import RereadableTexts, train_tokenizer
texts = [d.text for d in pydoc_documents()]
source = texts if sys.argv[1] == "list" else RereadableTexts(lambda: (t for t in texts))
print(hashlib.sha256(train_tokenizer(source, vocab_size=4000, algorithm=sys.argv[2]).to_str().encode()).hexdigest())
"""


def trained_in_a_new_process(source: str, algorithm: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", TRAIN_IN_A_PROCESS, source, algorithm],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
        check=True,
    )
    return result.stdout.strip()


def test_the_same_texts_give_the_same_tokenizer_in_every_process():
    for algorithm in ("wordpiece", "bpe"):
        digests = {trained_in_a_new_process(source, algorithm) for source in ("list", "rereadable", "list")}
        assert len(digests) == 1, f"{algorithm}: {len(digests)} different tokenizers from 3 processes"


def test_continuation_seeds_end_up_ordinary_vocabulary_entries():
    texts = ["Élan vital, naïve café!", "cafe elan #1"] * 5
    normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    seeds = continuation_seeds(texts, normalizer)
    assert seeds == sorted(seeds) and "##e" in seeds and "##é" not in seeds and "##É" not in seeds
    tokenizer = train_tokenizer(texts, vocab_size=80, min_frequency=1)
    added = {token.content for token in tokenizer.get_added_tokens_decoder().values()}
    assert added == set(SPECIAL_TOKENS)  # the seeds are not special tokens: "##e" in a text is split as usual
    assert tokenizer.encode("##e").tokens == ["[CLS]", "#", "#", "e", "[SEP]"]
    assert "##e" in tokenizer.get_vocab()


def test_a_one_shot_iterator_is_read_once_and_still_trains():
    reads = []

    def texts():
        for text in ["alpha beta gamma", "beta gamma delta"] * 5:
            reads.append(text)
            yield text

    tokenizer = train_tokenizer(texts(), vocab_size=60, min_frequency=1)
    assert len(reads) == 10 and tokenizer.encode("alpha delta").tokens == ["[CLS]", "alpha", "delta", "[SEP]"]
    rereadable = RereadableTexts(texts)
    reads.clear()
    twice = train_tokenizer(rereadable, vocab_size=60, min_frequency=1)
    assert twice.encode("alpha delta").tokens == ["[CLS]", "alpha", "delta", "[SEP]"]
    assert len(reads) == 20  # two passes: the characters, then the training
