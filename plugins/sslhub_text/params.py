"""The ``text`` modality's recipe schema: what ``data:`` may say for ``modality: text``.

:class:`TextParams` holds the corpus source (the embedded pydoc corpus, or ``.txt``/``.jsonl``
files), the tokenizer (trained locally or loaded) and the sample settings, with the checks that
need the files themselves (:meth:`TextParams.file_problems`). Building samples from them is
:mod:`sslhub_text.modality`'s job.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from sslhub import Params, group_split, path_problems, split_problem
from sslhub_text.corpus import (
    Document,
    SkipCounts,
    grouped_labeled_documents,
    iter_file_documents,
    iter_pydoc_documents,
    text_files_under,
)


class DefaultSource(Params):
    """The embedded corpus: paragraphs of CPython's reference documentation (``pydoc_data.topics``)."""

    type: Literal["default"] = "default"

    def read(self, skipped: SkipCounts) -> Iterator[Document]:
        """A fresh lazy iterator over the corpus's documents."""
        return iter_pydoc_documents(skipped)

    def description(self) -> str:
        return "the embedded pydoc corpus"

    def identity(self) -> str:
        """What names this corpus in cache keys: the Python release whose docs it is."""
        return f"pydoc_data of Python {platform.python_version()}"


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
    group_field: str | None = Field(
        None,
        description="Key naming each JSON record's group (an author, a source): the labeled split keeps groups "
        "apart, test groups unseen; needs label_field.",
    )

    def read(self, skipped: SkipCounts) -> Iterator[Document]:
        """A fresh lazy iterator over the documents of the files."""
        return iter_file_documents(Path(self.path), self.text_field, self.label_field, self.one_document_per, skipped)

    def description(self) -> str:
        return self.path

    def identity(self) -> str:
        """What names this corpus in cache keys: its files' paths, sizes and modification times
        (reading every byte to hash it would cost as much as tokenizing)."""
        lines = []
        for file in text_files_under(self.path):
            stat = file.stat()
            lines.append(f"{file.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n")
        return "".join(lines)

    @model_validator(mode="after")
    def _groups_need_labels(self) -> FilesSource:
        if self.group_field is not None and self.label_field is None:
            raise ValueError("group_field groups the labeled split, so it needs label_field too")
        return self

    def documents(self) -> list[Document]:
        """Every labeled document with a group (``group_field`` set), read now.

        Raises:
            ValueError: the path has no such file, or no labeled record has ``group_field``.
        """
        assert self.group_field is not None
        found = iter_file_documents(
            Path(self.path), self.text_field, self.label_field, self.one_document_per, group_field=self.group_field
        )
        return grouped_labeled_documents(found, self.group_field, self.path)

    def file_problems(
        self, test_fraction: float | None = None, seed: int = 0, min_train_per_class: int = 1
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """A missing or empty path, a group field in no labeled record, or a class without probe-train documents."""
        missing = path_problems(self.path, "file or folder", (".txt", ".jsonl"))
        if missing or self.group_field is None or test_fraction is None:
            return missing
        try:
            grouped_document_split(self.documents(), test_fraction, seed, min_train_per_class)
        except ValueError as error:
            return [(("group_field",), str(error))]
        return []


def grouped_document_split(
    documents: list[Document], test_fraction: float, seed: int, min_train_per_class: int = 1
) -> tuple[list[int], list[int], list[str], dict[str, int] | None]:
    """Train and test document indices (whole groups per side where documents have groups), class names, group counts.

    Raises:
        ValueError: the split leaves a class without probe-train documents.
    """
    class_names = sorted({d.label for d in documents if d.label is not None})
    index = {name: i for i, name in enumerate(class_names)}
    labels = [index[d.label] for d in documents]
    grouped = all(d.group is not None for d in documents)
    split = group_split(labels, [d.group for d in documents] if grouped else None, test_fraction, seed)
    problem = split_problem(labels, split, class_names, min_train_per_class)
    if problem is not None:
        raise ValueError(problem)
    return split.train, split.test, class_names, split.group_counts() if grouped else None


class TrainTokenizer(Params):
    """Train a tokenizer locally on the recipe's training documents (never on held-out ones)."""

    type: Literal["train"] = "train"
    vocab_size: int = Field(4000, ge=64, le=1_000_000, description="Vocabulary size including special tokens.")
    lowercase: bool = Field(True, description="Lowercase and strip accents before tokenizing.")
    algorithm: Literal["wordpiece", "bpe"] = Field("wordpiece", description="Subword algorithm.")
    min_frequency: int = Field(2, ge=1, description="Minimum count for a vocabulary entry or merge.")


class TrainTextTokenizer(TrainTokenizer):
    """:class:`TrainTokenizer` for the ``text`` modality, which can train on a sample of a large corpus."""

    max_documents: int | None = Field(
        None,
        ge=1,
        description=(
            "Train on a uniform random sample of at most this many training documents (held in memory) "
            "instead of streaming all of them through the trainer; null: all."
        ),
    )


class LocalTokenizer(Params):
    """Load an existing ``tokenizer.json`` (HF ``tokenizers`` format)."""

    type: Literal["local"] = "local"
    path: str = Field(description="A tokenizer.json file or a folder containing one.")

    def file_problems(
        self, test_fraction: float | None = None, seed: int = 0, min_train_per_class: int = 1
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """A missing or empty tokenizer file, or a folder without tokenizer.json."""
        folder = Path(self.path).expanduser()
        if folder.is_dir() and not (folder / "tokenizer.json").is_file():
            return [(("path",), f"folder {folder} has no tokenizer.json")]
        return path_problems(self.path, "file or folder")


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
    tokenizer: Annotated[TrainTextTokenizer | LocalTokenizer, Field(discriminator="type")] = Field(
        default_factory=TrainTextTokenizer,
        description="{type: train, vocab_size, ..., max_documents} or {type: local, path}.",
    )
    streaming: bool = Field(
        False,
        description=(
            "Tokenize into a disk-backed token store read through memory maps, for corpora larger than memory; "
            "a resumed run (or another run with the same corpus, settings and tokenizer, via cache_dir) reuses it."
        ),
    )
    cache_dir: str | None = Field(
        None,
        description=(
            "With streaming: folder for token stores and trained tokenizers, shareable between runs (each is "
            "named by a hash of the corpus files and settings); null: token_store/ in the run directory."
        ),
    )

    def file_problems(
        self, test_fraction: float | None = None, seed: int = 0, min_train_per_class: int = 1
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """The source's problems with ``held_out_fraction`` as the test share (seed 0)."""
        problems = [
            (("source", *path), m)
            for path, m in self.source.file_problems(self.held_out_fraction, 0, min_train_per_class)
        ]
        return problems + [(("tokenizer", *path), m) for path, m in self.tokenizer.file_problems()]

    @model_validator(mode="after")
    def _groups_need_a_test_side(self) -> TextParams:
        grouped = isinstance(self.source, FilesSource) and self.source.group_field is not None
        if grouped and self.held_out_fraction == 0:
            raise ValueError("source.group_field groups the labeled split, so held_out_fraction must be above 0")
        return self

    @model_validator(mode="after")
    def _cache_dir_needs_streaming(self) -> TextParams:
        if self.cache_dir is not None and not self.streaming:
            raise ValueError("cache_dir holds token stores, which only streaming: true writes; set streaming: true")
        return self

    @field_validator("tokenizer", mode="before")
    @classmethod
    def _accept_shared_tokenizer_params(cls, value: Any) -> Any:
        # A TrainTokenizer built by code shared with other modalities is re-read as TrainTextTokenizer.
        if isinstance(value, BaseModel) and not isinstance(value, TrainTextTokenizer | LocalTokenizer):
            return value.model_dump()
        return value
