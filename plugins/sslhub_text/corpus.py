"""Where text documents come from: the embedded Python reference corpus, or .txt/.jsonl files.

Every source yields :class:`Document` records (text plus an optional label) lazily, one line
or file at a time, so a corpus larger than memory can be streamed, and counts what it had to
skip (undecodable bytes, empty lines, malformed JSON), so the modality can warn about it once
instead of failing on the first bad line. ``*_documents`` functions return the same as lists.

The default corpus is the English reference documentation that CPython ships in
``pydoc_data.topics`` (what ``help("assert")`` prints): about 80 topics, 460 kB of text,
available offline in every Python installation. Topics overlap heavily (``compound``
contains ``if``, ``while``...), so paragraphs are de-duplicated by their normalised text.
Each paragraph is labeled with the chapter of the Python documentation its topic comes
from (lexical analysis, expressions, statements, data model, built-in types...), a real
topical label that a text representation should be able to separate.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: Which chapter of the Python documentation each ``pydoc_data.topics`` entry comes from
#: (the ``.rst`` file its section lives in). Used as the class label of the default corpus.
PYDOC_TOPIC_CHAPTERS: dict[str, str] = {
    # reference/lexical_analysis.rst
    **dict.fromkeys(
        ["identifiers", "id-classes", "strings", "integers", "floating", "imaginary", "numbers"],
        "lexical_analysis",
    ),
    # reference/expressions.rst
    **dict.fromkeys(
        [
            "atom-identifiers",
            "atom-literals",
            "attribute-references",
            "await",
            "binary",
            "bitwise",
            "booleans",
            "calls",
            "comparisons",
            "conversions",
            "dict",
            "exprlists",
            "in",
            "lambda",
            "lists",
            "operator-summary",
            "power",
            "shifting",
            "slicings",
            "subscriptions",
            "unary",
        ],
        "expressions",
    ),
    # reference/simple_stmts.rst
    **dict.fromkeys(
        [
            "assert",
            "assignment",
            "augassign",
            "break",
            "continue",
            "del",
            "global",
            "import",
            "nonlocal",
            "pass",
            "raise",
            "return",
            "yield",
        ],
        "simple_statements",
    ),
    # reference/compound_stmts.rst
    **dict.fromkeys(
        ["async", "class", "compound", "else", "for", "function", "if", "try", "while", "with"],
        "compound_statements",
    ),
    # reference/datamodel.rst
    **dict.fromkeys(
        [
            "attribute-access",
            "callable-types",
            "context-managers",
            "customization",
            "numeric-types",
            "objects",
            "sequence-types",
            "specialnames",
            "types",
        ],
        "data_model",
    ),
    # reference/executionmodel.rst
    **dict.fromkeys(["execmodel", "naming", "dynamic-features", "exceptions"], "execution_model"),
    # library/stdtypes.rst
    **dict.fromkeys(
        [
            "bltin-code-objects",
            "bltin-ellipsis-object",
            "bltin-null-object",
            "bltin-type-objects",
            "specialattrs",
            "string-methods",
            "truth",
            "typesfunctions",
            "typesmapping",
            "typesmethods",
            "typesmodules",
            "typesseq",
            "typesseq-mutable",
        ],
        "builtin_types",
    ),
    # library/pdb.rst and library/string.rst: standard-library module pages
    **dict.fromkeys(["debugger", "formatstrings"], "library_modules"),
}

_RULE_LINE = re.compile(r"^\s*([*=\-~^#])\1{2,}\s*$")  # reST section underlines: "*****", "====="
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Document:
    """One training document.

    Attributes:
        text: the document text (never empty).
        label: class name for the labeled evaluation split, or ``None``.
        group: the document's group (an author, a source) for splits that keep groups apart, or ``None``.
    """

    text: str
    label: str | None = None
    group: str | None = None


@dataclass
class SkipCounts:
    """What a source skipped and why: reason -> count."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, reason: str, n: int = 1) -> None:
        self.counts[reason] += n

    def total(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))


def normalize_whitespace(text: str) -> str:
    """Collapse runs of whitespace (newlines, indentation) into single spaces."""
    return _WHITESPACE.sub(" ", text).strip()


def iter_pydoc_documents(skipped: SkipCounts | None = None) -> Iterator[Document]:
    """Paragraphs of CPython's ``pydoc_data.topics``, de-duplicated, labeled by documentation chapter.

    Topics are visited in sorted order and paragraphs in text order, so the result is
    deterministic for a given Python version. A paragraph seen before (topics overlap) is
    dropped; reST underline rows are removed. The corpus is small (460 kB), so the set of
    texts seen for de-duplication is no memory concern.
    """
    from pydoc_data.topics import topics

    skipped = skipped if skipped is not None else SkipCounts()
    seen: set[str] = set()
    for topic in sorted(topics):
        label = PYDOC_TOPIC_CHAPTERS.get(topic, "other")
        for paragraph in topics[topic].split("\n\n"):
            lines = [line for line in paragraph.splitlines() if not _RULE_LINE.match(line)]
            text = normalize_whitespace(" ".join(lines))
            if not text:
                skipped.add("empty paragraphs")
                continue
            if text in seen:
                skipped.add("duplicate paragraphs")
                continue
            seen.add(text)
            yield Document(text, label)


def pydoc_documents(skipped: SkipCounts | None = None) -> list[Document]:
    """All of :func:`iter_pydoc_documents` as a list."""
    return list(iter_pydoc_documents(skipped))


def text_files_under(path: str | Path) -> list[Path]:
    """``path`` itself if it is a file, else every ``.txt``/``.jsonl`` file below it, sorted.

    Raises:
        ValueError: the path does not exist, or the folder holds no such file.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".txt", ".jsonl"))
        if not files:
            raise ValueError(f"text source folder {path} contains no .txt or .jsonl files")
        return files
    raise ValueError(f"text source path {path} does not exist")


def _file_lines(file: Path) -> Iterator[bytes]:
    """The lines of a file without their line ends, read lazily.

    Splits exactly like ``bytes.splitlines`` on the whole file (``\\n``, ``\\r\\n`` and a lone
    ``\\r``) while holding one line at a time.
    """
    with open(file, "rb") as handle:
        for raw_line in handle:
            yield from raw_line.splitlines()


def _decode_lines(lines: Iterable[bytes], skipped: SkipCounts) -> Iterator[str]:
    for line_bytes in lines:
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError:
            skipped.add("lines with invalid UTF-8")
            continue
        if not line.strip():
            skipped.add("empty lines")
            continue
        yield line


def _jsonl_documents(
    lines: Iterable[bytes], text_field: str, label_field: str | None, skipped: SkipCounts, group_field: str | None
) -> Iterator[Document]:
    for line in _decode_lines(lines, skipped):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped.add("lines that are not valid JSON")
            continue
        text = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            skipped.add(f"records without a non-empty string '{text_field}'")
            continue
        label = None
        if label_field is not None:
            value = record.get(label_field)
            if value is None:
                skipped.add(f"records without '{label_field}'")
                continue
            label = str(value)
        group = record.get(group_field) if group_field is not None else None
        yield Document(text.strip(), label, None if group is None else str(group))


def iter_file_documents(
    path: str | Path,
    text_field: str = "text",
    label_field: str | None = None,
    one_document_per: str = "line",
    skipped: SkipCounts | None = None,
    group_field: str | None = None,
) -> Iterator[Document]:
    """Documents read lazily from a ``.txt``/``.jsonl`` file or a folder of them (sorted, recursive).

    Only one line (or, with ``one_document_per="file"``, one ``.txt`` file) is in memory at a
    time, so corpora larger than memory can be streamed. The path and ``one_document_per`` are
    checked at once; ``skipped`` is complete once the iterator is exhausted.

    Args:
        path: a file, or a folder searched recursively for ``*.txt`` and ``*.jsonl``.
        text_field: key holding the text in each JSON line.
        label_field: key holding a class label in each JSON line (records without it are
            skipped); ``None`` for unlabeled data.
        one_document_per: ``line`` (each non-empty line / JSON record is a document) or
            ``file`` (a whole ``.txt`` file is one document; JSON lines stay one per line).
        skipped: counter that collects what was skipped.
        group_field: key holding each JSON record's group (records without it get ``group=None``).
    """
    if one_document_per not in ("line", "file"):
        raise ValueError(f"one_document_per must be 'line' or 'file', got {one_document_per!r}")
    files = text_files_under(path)
    skipped = skipped if skipped is not None else SkipCounts()
    return _documents_of_files(files, text_field, label_field, one_document_per, skipped, group_field)


def _documents_of_files(
    files: list[Path],
    text_field: str,
    label_field: str | None,
    one_document_per: str,
    skipped: SkipCounts,
    group_field: str | None,
) -> Iterator[Document]:
    for file in files:
        if file.suffix.lower() == ".jsonl":
            yield from _jsonl_documents(_file_lines(file), text_field, label_field, skipped, group_field)
        elif one_document_per == "file":
            try:
                text = file.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                skipped.add("files with invalid UTF-8")
                continue
            text = normalize_whitespace(text)
            if text:
                yield Document(text)
            else:
                skipped.add("empty files")
        else:
            yield from (Document(line.strip()) for line in _decode_lines(_file_lines(file), skipped))


def file_documents(
    path: str | Path,
    text_field: str = "text",
    label_field: str | None = None,
    one_document_per: str = "line",
    skipped: SkipCounts | None = None,
    group_field: str | None = None,
) -> list[Document]:
    """All of :func:`iter_file_documents` as a list (same arguments)."""
    return list(iter_file_documents(path, text_field, label_field, one_document_per, skipped, group_field))


def grouped_labeled_documents(documents: Iterable[Document], group_field: str, where: str) -> list[Document]:
    """The labeled documents that have a group, for a split that keeps groups apart.

    Raises:
        ValueError: no labeled document has a ``group_field`` value (the field matches nothing).
    """
    labeled = [d for d in documents if d.label is not None]
    grouped = [d for d in labeled if d.group is not None]
    if not grouped:
        raise ValueError(f"group_field '{group_field}' is in none of the {len(labeled)} labeled records of {where}")
    return grouped


def sample_documents(documents: Iterable[Document], max_documents: int, seed: int = 0) -> list[Document]:
    """A uniform random sample of at most ``max_documents`` documents, in one pass (reservoir sampling).

    Holds only the sample in memory, however long ``documents`` is; returns every document,
    in order, when there are no more than ``max_documents``. Deterministic for a given seed.
    """
    if max_documents < 1:
        raise ValueError(f"max_documents must be at least 1, got {max_documents}")
    rng = random.Random(seed)
    sample: list[Document] = []
    for seen, document in enumerate(documents):
        if seen < max_documents:
            sample.append(document)
        else:
            slot = rng.randrange(seen + 1)
            if slot < max_documents:
                sample[slot] = document
    return sample


def is_held_out(document: Document, held_out_fraction: float) -> bool:
    """Whether a document belongs to the held-out part, decided by a CRC32 of its text.

    Hashing the text (not its position) keeps the split stable when documents are added or
    reordered, and sends identical documents to the same side, so none leaks across.
    """
    return zlib.crc32(document.text.encode("utf-8")) % 100_000 < held_out_fraction * 100_000


def split_documents(documents: Iterable[Document], held_out_fraction: float) -> tuple[list[Document], list[Document]]:
    """``(train, held_out)`` lists, split deterministically by :func:`is_held_out`."""
    train, held_out = [], []
    for document in documents:
        (held_out if is_held_out(document, held_out_fraction) else train).append(document)
    return train, held_out
