"""Streaming a corpus through the disk-backed token store (``data.streaming: true``).

A generated corpus streamed through the store must give exactly the samples of the
in-memory path; the build must hold only a chunk of it in memory; a resumed run must reuse
the store; an interrupted or damaged store must be rebuilt, never used.
"""

from __future__ import annotations

import inspect
import json
import logging
import pickle
import random
import tracemalloc

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

import sslhub_text.corpus_tokens as corpus_tokens
import sslhub_text.token_store as token_store
import sslhub_text.tokenizer_supply as tokenizer_supply
from sslhub_text.corpus import Document, SkipCounts, is_held_out
from sslhub_text.modality import FilesSource, LocalTokenizer, TextModality, TextParams, TrainTextTokenizer
from sslhub_text.tokenizer import train_tokenizer

WORDS = (
    "river stone cloud engine paper garden signal market winter copper lantern meadow orbit "
    "violin harbor basket thunder pencil canyon ribbon falcon marble tunnel silver"
).split()
TOPICS = ("weather", "music", "travel")


def write_corpus(folder, lines: int, seed: int = 0) -> None:
    """A labeled .jsonl file and an unlabeled .txt file (with an empty and a bad line) of random words."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for _ in range(lines):
        # The first record is "weather", last in sorted order: label ids must be renumbered.
        topic = rng.randrange(len(TOPICS)) if records else 0
        words = [WORDS[(topic * 7 + rng.randrange(10)) % len(WORDS)] for _ in range(rng.randint(1, 60))]
        records.append(json.dumps({"text": " ".join(words), "topic": TOPICS[topic]}))
    (folder / "a.jsonl").write_text("\n".join(records) + "\n")
    plain = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 200))) for _ in range(lines // 4)]
    (folder / "b.txt").write_bytes(("\n".join(plain) + "\n\n").encode() + b"bad \xff line\n")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    write_corpus(folder, 3000)
    return folder


@pytest.fixture(scope="module")
def tokenizer_file(corpus, tmp_path_factory):
    """One tokenizer for every test here: two trainings may break frequency ties differently."""
    texts = [json.loads(line)["text"] for line in (corpus / "a.jsonl").read_text().splitlines()]
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    train_tokenizer(texts, vocab_size=120, min_frequency=1).save(str(path))
    return path


def params(corpus, tokenizer_file, **overrides) -> TextParams:
    settings = {
        "source": FilesSource(path=str(corpus), label_field=None),
        "max_length": 24,
        "held_out_fraction": 0.2,
        "tokenizer": LocalTokenizer(path=str(tokenizer_file)),
        **overrides,
    }
    return TextParams(**settings)


def prepared(run_dir, **settings) -> TextModality:
    modality = TextModality(params(**settings))
    modality.prepare(run_dir)
    return modality


def samples_of(modality: TextModality) -> dict[str, list[list[int]]]:
    """Every sample of every split as plain lists (labels appended)."""
    split = modality.eval_split()
    datasets = {"train": modality.train_dataset(), "held_out": modality.held_out_dataset()}
    if split is not None:
        datasets.update(eval_train=split.train, eval_test=split.test)
    result = {}
    for name, dataset in datasets.items():
        rows = []
        for index in range(len(dataset)):
            sample = dataset[index]
            rows.append(sample["input_ids"].tolist() + ([int(sample["label"])] if "label" in sample else []))
        result[name] = rows
    return result


def store_folder(run_dir):
    (folder,) = [p for p in (run_dir / "token_store").iterdir() if p.is_dir()]
    return folder


def reference_samples(path, tokenizer_file, pack: bool, max_length: int = 24) -> dict[str, list[list[int]]]:
    """The samples written out longhand: the whole corpus read into lists, then cut."""
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    sides: dict[str, list[tuple[list[int], str]]] = {"train": [], "held_out": []}
    for record in records:
        tokens = tokenizer.encode(record["text"], add_special_tokens=False).ids
        held_out = is_held_out(Document(record["text"]), 0.2)
        sides["held_out" if held_out else "train"].append((tokens, record["topic"]))
    classes = sorted({record["topic"] for record in records})
    result = {}
    for side, documents in sides.items():
        if pack:
            stream = [t for tokens, _ in documents for t in [*tokens, sep]]
            result[side] = [[cls, *stream[i : i + max_length - 1]] for i in range(0, len(stream), max_length - 1)]
        else:
            width = max_length - 2
            result[side] = [
                [cls, *tokens[i : i + width], sep] for tokens, _ in documents for i in range(0, len(tokens), width)
            ]
        labeled = [[cls, *tokens[: max_length - 2], sep, classes.index(topic)] for tokens, topic in documents]
        result["eval_train" if side == "train" else "eval_test"] = labeled
    return result


@pytest.mark.parametrize("pack", [True, False])
def test_streamed_store_gives_exactly_the_in_memory_samples(corpus, tokenizer_file, tmp_path, monkeypatch, pack):
    corpus_files = {"corpus": corpus, "tokenizer_file": tokenizer_file}
    labeled = FilesSource(path=str(corpus / "a.jsonl"), label_field="topic")
    in_memory = TextModality(params(**corpus_files, source=labeled, pack=pack))
    in_memory.prepare(None)
    # Small chunks: the packed stream and the label codes must carry across many chunks.
    monkeypatch.setattr(token_store, "ENCODE_CHUNK_CHARS", 5000)
    streamed = prepared(tmp_path / "run", **corpus_files, source=labeled, pack=pack, streaming=True)

    assert isinstance(streamed.train_dataset().ids, np.memmap)
    assert not isinstance(in_memory.train_dataset().ids, np.memmap)
    expected = reference_samples(corpus / "a.jsonl", tokenizer_file, pack)
    assert samples_of(in_memory) == expected
    assert samples_of(streamed) == expected
    assert streamed.eval_split().class_names == in_memory.eval_split().class_names == tuple(sorted(TOPICS))
    assert streamed.fingerprint() == in_memory.fingerprint()
    assert len(streamed.train_dataset()) > 100 and len(streamed.held_out_dataset()) > 10
    if pack:  # every packed sample but the last is full
        assert {len(sample) for sample in expected["train"][:-1]} == {24}


def test_documents_and_skips_are_streamed_and_reported(corpus, tokenizer_file, tmp_path, caplog):
    modality = TextModality(params(corpus, tokenizer_file, streaming=True))
    documents = modality.params.source.read(SkipCounts())
    assert inspect.isgenerator(documents)
    with caplog.at_level(logging.WARNING, logger="sslhub"):
        modality.prepare(tmp_path / "run")
    assert "skipped 2 items" in caplog.text
    assert "1 empty lines, 1 lines with invalid UTF-8" in caplog.text
    # reported again when the store is reused, from what the build recorded
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sslhub"):
        prepared(tmp_path / "run", corpus=corpus, tokenizer_file=tokenizer_file, streaming=True)
    assert "reusing the token store" in caplog.text and "skipped 2 items" in caplog.text


def test_build_holds_a_chunk_not_the_corpus_in_memory(tmp_path):
    folder = tmp_path / "big"
    rng = random.Random(1)
    lines = (" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))) for _ in range(32_000))
    folder.mkdir()
    (folder / "big.txt").write_text("\n".join(lines) + "\n")
    corpus_bytes = (folder / "big.txt").stat().st_size
    assert corpus_bytes > 4_000_000
    modality = TextModality(
        TextParams(
            source=FilesSource(path=str(folder)),
            max_length=64,
            streaming=True,
            tokenizer=TrainTextTokenizer(vocab_size=100, min_frequency=1, max_documents=300),
        )
    )
    tracemalloc.start()
    try:
        modality.prepare(tmp_path / "run")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    dataset = modality.train_dataset()
    assert isinstance(dataset.ids, np.memmap) and isinstance(dataset.offsets, np.memmap)
    assert dataset.num_tokens() > 500_000  # the whole corpus went through, on disk
    # The token ids alone (2 bytes each) would exceed this if they were kept in memory.
    assert dataset.ids.nbytes > corpus_bytes / 5
    assert peak < corpus_bytes / 5, f"peak traced memory {peak} bytes for a {corpus_bytes}-byte corpus"


def test_tokenizer_trains_from_a_stream_or_a_bounded_sample(corpus, tmp_path, monkeypatch):
    seen = {}

    def recording_train_tokenizer(texts, **settings):
        seen["is_list"] = isinstance(texts, list)
        seen["texts"] = list(texts)
        return train_tokenizer(seen["texts"], **settings)

    monkeypatch.setattr(tokenizer_supply, "train_tokenizer", recording_train_tokenizer)
    source = FilesSource(path=str(corpus / "a.jsonl"))
    settings = {"source": source, "max_length": 24, "held_out_fraction": 0.2}
    whole = TextModality(TextParams(**settings, tokenizer=TrainTextTokenizer(vocab_size=120, min_frequency=1)))
    whole.prepare(None)
    assert not seen["is_list"]
    everything = seen["texts"]
    documents = list(whole.params.source.read(SkipCounts()))
    # every training document, never a held-out one
    assert everything == [d.text for d in documents if not is_held_out(d, 0.2)]
    assert 0 < len(everything) < len(documents)

    sampled = TextModality(
        TextParams(**settings, tokenizer=TrainTextTokenizer(vocab_size=120, min_frequency=1, max_documents=100))
    )
    sampled.prepare(None)
    assert len(seen["texts"]) == 100 and set(seen["texts"]) <= set(everything)
    assert seen["texts"] != everything[:100]  # a sample of the whole corpus, not its beginning


def test_resume_reuses_the_store_without_tokenizing(corpus, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    settings = {
        "source": FilesSource(path=str(corpus)),
        "max_length": 24,
        "streaming": True,
        "tokenizer": TrainTextTokenizer(vocab_size=120, min_frequency=1, max_documents=500),
    }
    first = TextModality(TextParams(**settings))
    first.prepare(run_dir)
    ids_file = store_folder(run_dir) / "train.ids"
    written = ids_file.stat().st_mtime_ns
    expected = samples_of(first)

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("the corpus was tokenized again")

    monkeypatch.setattr(corpus_tokens, "write_samples", no_tokenizing)
    monkeypatch.setattr(tokenizer_supply, "train_tokenizer", no_tokenizing)
    resumed = TextModality(TextParams(**settings))
    resumed.prepare(run_dir)  # loads run_dir/tokenizer.json, so the store key is the same
    assert samples_of(resumed) == expected
    assert ids_file.stat().st_mtime_ns == written
    assert resumed.fingerprint() == first.fingerprint()


def test_shared_cache_dir_is_reused_across_runs_and_follows_corpus_changes(tmp_path, tokenizer_file):
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 300)
    cache = tmp_path / "cache"
    settings = {"corpus": corpus, "tokenizer_file": tokenizer_file, "streaming": True, "cache_dir": str(cache)}
    first = prepared(tmp_path / "run1", **settings)
    second = prepared(tmp_path / "run2", **settings)
    assert samples_of(first) == samples_of(second)
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1 and not (tmp_path / "run2" / "token_store").exists()

    with open(corpus / "b.txt", "a") as handle:
        handle.write("marble orbit falcon\n")
    changed = prepared(tmp_path / "run3", **settings)
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2
    assert changed.fingerprint() != first.fingerprint()
    assert changed.train_dataset().num_tokens() + changed.held_out_dataset().num_tokens() > (
        first.train_dataset().num_tokens() + first.held_out_dataset().num_tokens()
    )


def test_cache_dir_keeps_the_trained_tokenizer_so_later_runs_hit_the_token_store(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 300)
    cache = tmp_path / "cache"
    trained = TrainTextTokenizer(vocab_size=120, min_frequency=1)
    settings = {"corpus": corpus, "tokenizer_file": None, "tokenizer": trained, "streaming": True}
    first = prepared(tmp_path / "run1", **settings, cache_dir=str(cache))
    (kept,) = (cache / "tokenizers").glob("tokenizer-*.json")
    assert (
        Tokenizer.from_file(str(kept)).to_str()
        == Tokenizer.from_file(str(tmp_path / "run1" / "tokenizer.json")).to_str()
    )

    def no_work(*args, **kwargs):
        raise AssertionError("the tokenizer was trained or the corpus tokenized again")

    # A second run takes the kept tokenizer instead of training one (the store key is that tokenizer's),
    # and then the cached store instead of tokenizing.
    with monkeypatch.context() as patch:
        patch.setattr(tokenizer_supply, "train_tokenizer", no_work)
        patch.setattr(corpus_tokens, "write_samples", no_work)
        second = prepared(tmp_path / "run2", **settings, cache_dir=str(cache))
    assert samples_of(second) == samples_of(first)

    other = {**settings, "tokenizer": TrainTextTokenizer(vocab_size=160, min_frequency=1)}
    prepared(tmp_path / "run3", **other, cache_dir=str(cache))
    assert len(list((cache / "tokenizers").glob("tokenizer-*.json"))) == 2
    prepared(tmp_path / "run4", **settings)  # no cache_dir: nothing is kept outside the run
    assert len(list((cache / "tokenizers").glob("tokenizer-*.json"))) == 2


def test_interrupted_build_keeps_nothing_and_the_next_run_builds(corpus, tokenizer_file, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    real_write_samples = corpus_tokens.write_samples

    def interrupted(documents, *args, **kwargs):
        def until_interrupt():
            for index, document in enumerate(documents):
                if index == 500:
                    raise KeyboardInterrupt
                yield document

        return real_write_samples(until_interrupt(), *args, **kwargs)

    monkeypatch.setattr(corpus_tokens, "write_samples", interrupted)
    monkeypatch.setattr(token_store, "ENCODE_CHUNK_CHARS", 5000)  # some chunks are written before the interrupt
    with pytest.raises(KeyboardInterrupt):
        prepared(run_dir, corpus=corpus, tokenizer_file=tokenizer_file, streaming=True)
    assert not [p for p in (run_dir / "token_store").iterdir() if p.is_dir()]

    # A build killed outright (no exception handler ran) leaves its partial folder behind.
    monkeypatch.setattr(corpus_tokens, "write_samples", real_write_samples)
    reference = prepared(None, corpus=corpus, tokenizer_file=tokenizer_file)
    key = corpus_tokens.store_key(reference.params, reference.tokenizer)
    leftover = run_dir / "token_store" / f"{key}.partial-999-deadbeef"
    leftover.mkdir()
    (leftover / "train.ids").write_bytes(b"\x00" * 10)
    modality = prepared(run_dir, corpus=corpus, tokenizer_file=tokenizer_file, streaming=True)
    assert not leftover.exists()
    assert store_folder(run_dir).name == key
    assert samples_of(modality) == samples_of(reference)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda folder: (folder / "meta.json").unlink(), "no readable meta.json"),
        (lambda folder: (folder / "meta.json").write_text("{trunc"), "no readable meta.json"),
        (lambda folder: (folder / "train.ids").write_bytes((folder / "train.ids").read_bytes()[:-6]), "train.ids"),
        (lambda folder: (folder / "held_out.offsets").unlink(), "held_out.offsets is missing"),
        (
            lambda folder: (folder / "train.offsets").write_bytes(
                np.arange(len(np.fromfile(folder / "train.offsets", dtype=np.int64)), dtype=np.int64)[::-1].tobytes()
            ),
            "train.offsets does not describe",
        ),
    ],
    ids=["no-meta", "bad-meta", "truncated-ids", "missing-offsets", "bad-offsets"],
)
def test_damaged_store_is_detected_and_rebuilt(corpus, tokenizer_file, tmp_path, caplog, damage, message):
    run_dir = tmp_path / "run"
    settings = {"corpus": corpus, "tokenizer_file": tokenizer_file, "streaming": True}
    expected = samples_of(prepared(run_dir, **settings))
    damage(store_folder(run_dir))
    with caplog.at_level(logging.WARNING, logger="sslhub"):
        rebuilt = prepared(run_dir, **settings)
    assert "is unusable" in caplog.text and message in caplog.text
    assert samples_of(rebuilt) == expected


def test_memory_mapped_dataset_pickles_as_file_names(corpus, tokenizer_file, tmp_path):
    modality = prepared(tmp_path / "run", corpus=corpus, tokenizer_file=tokenizer_file, streaming=True)
    dataset = modality.train_dataset()
    payload = pickle.dumps(dataset)
    assert len(payload) < 2000 < dataset.ids.nbytes
    restored = pickle.loads(payload)
    assert isinstance(restored.ids, np.memmap)
    assert all(torch.equal(restored[i]["input_ids"], dataset[i]["input_ids"]) for i in range(0, len(dataset), 37))
    loader = DataLoader(dataset, batch_size=4, num_workers=1, collate_fn=modality.collate)
    first = next(iter(loader))
    assert torch.equal(first["input_ids"][0, : len(dataset[0]["input_ids"])], dataset[0]["input_ids"])


def test_streaming_without_a_run_dir_uses_a_temporary_store(corpus, tokenizer_file):
    modality = prepared(None, corpus=corpus, tokenizer_file=tokenizer_file, streaming=True)
    location = modality.train_dataset().ids.filename
    assert "sslhub-text-store-" in str(location)
    assert samples_of(modality) == samples_of(prepared(None, corpus=corpus, tokenizer_file=tokenizer_file))


def test_a_corpus_without_usable_documents_fails_and_keeps_no_store(tmp_path, tokenizer_file):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_bytes(b"\n   \n\xff\xfe\n")
    modality = TextModality(params(tmp_path / "corpus", tokenizer_file, streaming=True))
    for _ in range(2):  # a failed prepare leaves the modality unprepared, so it fails the same way again
        with pytest.raises(ValueError, match="no usable text documents in"):
            modality.prepare(tmp_path / "run")
    assert not [p for p in (tmp_path / "run" / "token_store").iterdir() if p.is_dir()]
