"""Document sources: the embedded pydoc corpus, .txt/.jsonl files, skip counting, the held-out split."""

from __future__ import annotations

import inspect
import json
from pydoc_data.topics import topics

import pytest

from sslhub_text.corpus import (
    PYDOC_TOPIC_CHAPTERS,
    Document,
    SkipCounts,
    file_documents,
    iter_file_documents,
    pydoc_documents,
    sample_documents,
    split_documents,
)


def test_every_pydoc_topic_has_a_documentation_chapter():
    missing = sorted(set(topics) - set(PYDOC_TOPIC_CHAPTERS))
    assert not missing, f"topics without a chapter label: {missing}"


def test_pydoc_documents_are_deterministic_deduplicated_and_labeled():
    skipped = SkipCounts()
    documents = pydoc_documents(skipped)
    assert documents == pydoc_documents()
    texts = [d.text for d in documents]
    assert len(texts) == len(set(texts)) > 1000
    assert skipped.counts["duplicate paragraphs"] > 0  # topics overlap (compound contains if/while/...)
    assert all(d.text and "\n" not in d.text for d in documents)
    # reST underlines are dropped from headings
    assert Document('The "assert" statement', "simple_statements") in documents
    assert {d.label for d in documents} == set(PYDOC_TOPIC_CHAPTERS.values())
    # a paragraph of the "assert" topic keeps its statement chapter
    assert any("assert_stmt" in d.text and d.label == "simple_statements" for d in documents)


def test_txt_lines_skip_bad_utf8_and_empty_lines(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"first line\n\n   \nbad \xff\xfe bytes\nsecond line\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("third line\n", encoding="utf-8")
    (tmp_path / "ignored.csv").write_text("not,text\n")
    skipped = SkipCounts()
    documents = file_documents(tmp_path, skipped=skipped)
    assert [d.text for d in documents] == ["first line", "second line", "third line"]
    assert skipped.counts == {"empty lines": 2, "lines with invalid UTF-8": 1}


def test_txt_one_document_per_file(tmp_path):
    (tmp_path / "a.txt").write_text("one\ntwo\n\nthree\n")
    (tmp_path / "b.txt").write_bytes(b"\xff broken")
    skipped = SkipCounts()
    documents = file_documents(tmp_path, one_document_per="file", skipped=skipped)
    assert documents == [Document("one two three")]
    assert skipped.counts == {"files with invalid UTF-8": 1}


def test_jsonl_text_and_label_fields(tmp_path):
    rows = [
        json.dumps({"body": "a cat sat", "topic": "animals"}),
        "{not json",
        json.dumps({"body": "", "topic": "x"}),
        json.dumps({"body": "no label here"}),
        json.dumps({"body": "stocks fell", "topic": 3}),
    ]
    (tmp_path / "data.jsonl").write_text("\n".join(rows) + "\n")
    skipped = SkipCounts()
    documents = file_documents(tmp_path / "data.jsonl", text_field="body", label_field="topic", skipped=skipped)
    assert documents == [Document("a cat sat", "animals"), Document("stocks fell", "3")]
    assert skipped.counts == {
        "lines that are not valid JSON": 1,
        "records without a non-empty string 'body'": 1,
        "records without 'topic'": 1,
    }


def test_missing_path_and_empty_folder_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        file_documents(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"contains no \.txt or \.jsonl files"):
        file_documents(tmp_path)


def test_split_is_deterministic_disjoint_and_near_the_fraction():
    documents = pydoc_documents()
    train, held_out = split_documents(documents, 0.1)
    assert (train, held_out) == split_documents(list(reversed(documents))[::-1], 0.1)
    assert not {d.text for d in train} & {d.text for d in held_out}
    assert len(train) + len(held_out) == len(documents)
    assert 0.07 < len(held_out) / len(documents) < 0.13
    # a document's side depends on its text only, not on what else is in the corpus
    _, held_small = split_documents(documents[:300], 0.1)
    assert set(held_small) <= set(held_out)


def test_file_reader_is_lazy_and_splits_lines_like_splitlines_on_the_whole_file(tmp_path):
    raw = b"dos line\r\nold mac\rline\n\r\n\xff bad\nlast without newline"
    (tmp_path / "a.txt").write_bytes(raw)
    skipped = SkipCounts()
    documents = iter_file_documents(tmp_path, skipped=skipped)
    assert inspect.isgenerator(documents)
    assert next(documents) == Document("dos line")
    assert not skipped.counts  # nothing past the first line has been read yet
    expected = [line.decode() for line in raw.splitlines() if line.strip() and b"\xff" not in line]
    assert ["dos line", *(d.text for d in documents)] == expected
    assert skipped.counts == {"empty lines": 1, "lines with invalid UTF-8": 1}


def test_file_reader_checks_its_arguments_before_iterating(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        iter_file_documents(tmp_path / "nope")
    with pytest.raises(ValueError, match="one_document_per must be 'line' or 'file'"):
        iter_file_documents(tmp_path, one_document_per="paragraph")


def test_sample_documents_is_a_bounded_uniform_reservoir():
    documents = [Document(f"document {i}") for i in range(200)]
    assert sample_documents(iter(documents[:30]), 50) == documents[:30]
    sample = sample_documents(iter(documents), 50, seed=3)
    assert len(sample) == len({d.text for d in sample}) == 50
    assert sample == sample_documents(iter(documents), 50, seed=3)
    # every document is equally likely: over many seeds each is drawn about 50/200 of the time
    draws = [0] * len(documents)
    for seed in range(400):
        for document in sample_documents(iter(documents), 50, seed=seed):
            draws[int(document.text.split()[1])] += 1
    first_half, second_half = sum(draws[:100]), sum(draws[100:])
    assert first_half + second_half == 400 * 50
    assert abs(first_half - second_half) < 0.05 * 400 * 50
    assert min(draws) > 0.6 * 100 and max(draws) < 1.4 * 100
    with pytest.raises(ValueError, match="at least 1"):
        sample_documents(iter(documents), 0)
