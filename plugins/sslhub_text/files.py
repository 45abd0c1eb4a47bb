"""Text files (and texts) to ``input_ids`` + ``attention_mask``, as the text modality made them; no torch.

Registered in the ``sslhub.files`` entry-point group. ``.txt`` files hold one document per
non-empty line, ``.jsonl`` files one JSON object per line with the text under the
``text_field`` option. Each text is tokenized with the tokenizer file stored in the model
folder (``tokenizer_file`` in the preprocessing constants), wrapped in ``[CLS] ... [SEP]``,
truncated to ``max_length`` and right-padded per batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import sslhub

TEXT_EXTENSIONS = (".txt", ".jsonl")
TOKEN_INPUTS = ("input_ids", "attention_mask")


class TextDecoder(sslhub.FileDecoder):
    """Texts -> ``{"input_ids": int64 [B, L], "attention_mask": int64 [B, L]}``, ``L`` the longest in the batch."""

    kind = "text"
    extensions = TEXT_EXTENSIONS

    def __init__(self, model: sslhub.ModelInputs):
        super().__init__(model)
        self.preprocessing = model.preprocessing("text")
        self.text_field = str(model.options.get("text_field", "text"))
        self._tokenizer: Any = None

    @classmethod
    def accepts(cls, model: sslhub.ModelInputs) -> bool:
        return model.input_names == TOKEN_INPUTS and "max_length" in model.preprocessing("text")

    def read(self, path: Path) -> Iterator[tuple[str, list[int]]]:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise sslhub.DecodeError(f"{path}: cannot read it as UTF-8 text ({error})") from None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            text = self._field(path, number, line) if path.suffix.lower() == ".jsonl" else line
            yield f"{path}:{number}", self.token_ids(text)

    def _field(self, path: Path, number: int, line: str) -> str:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise sslhub.DecodeError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(self.text_field), str):
            raise sslhub.DecodeError(f"{path}:{number}: no string field {self.text_field!r} (use --text-field)")
        return record[self.text_field]

    def read_records(self, records: Sequence[Any]) -> list[list[int]]:
        """Token ids of each text in ``records`` (strings)."""
        for index, text in enumerate(records):
            if not isinstance(text, str):
                raise sslhub.DecodeError(f"texts[{index}] is {type(text).__name__}, not a string")
        return [self.token_ids(text) for text in records]

    def token_ids(self, text: str) -> list[int]:
        """``[CLS] ids [SEP]`` of one text, truncated to ``max_length`` in all."""
        prep = self.preprocessing
        head = [prep["cls_token_id"]] if prep.get("cls_token_id") is not None else []
        tail = [prep["sep_token_id"]] if prep.get("sep_token_id") is not None else []
        width = int(prep["max_length"]) - len(head) - len(tail)
        ids = self._load_tokenizer().encode(text, add_special_tokens=False).ids[:width]
        return head + ids + tail

    def _load_tokenizer(self) -> Any:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            name = str(self.preprocessing.get("tokenizer_file") or "tokenizer.json")
            path = self.model.file(name, what="the preprocessing's tokenizer_file")
            if not path.is_file():
                raise sslhub.DecodeError(f"{path} is missing: export the run again to copy the tokenizer beside it")
            try:
                self._tokenizer = Tokenizer.from_file(str(path))
            except Exception as error:  # tokenizers raises its own exception type for a corrupt file
                raise sslhub.DecodeError(f"{path}: not a readable tokenizer file ({error})") from None
        return self._tokenizer

    def collate(self, samples: list[list[int]]) -> dict[str, np.ndarray]:
        pad = int(self.preprocessing.get("pad_token_id") or 0)
        length = max(len(s) for s in samples)
        ids = np.full((len(samples), length), pad, dtype=np.int64)
        mask = np.zeros((len(samples), length), dtype=np.int64)
        for row, sequence in enumerate(samples):
            ids[row, : len(sequence)] = sequence
            mask[row, : len(sequence)] = 1
        return {"input_ids": ids, "attention_mask": mask}
