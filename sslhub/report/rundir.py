"""Reading what a run directory holds for the report, as untrusted input.

Only regular files inside the run directory are read (a link pointing elsewhere is skipped),
JSON and YAML are parsed as data (``yaml.safe_load``), arrays load without pickle, and a
picture is taken only when it is a PNG under :data:`MAX_PICTURE_BYTES`. A file that cannot be
read is named in :attr:`RunRecord.problems` instead of stopping the report.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sslhub.errors import SSLHubError

MAX_PICTURE_BYTES = 8 * 2**20
#: a text file is shown up to this many characters.
MAX_TEXT_CHARS = 20000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: the files a run directory is recognised by (a folder with none of them is not a run).
RUN_FILES = ("summary.json", "metrics.jsonl", "recipe.yaml", "environment.json")
_EVALUATION = re.compile(r"^evaluation(?:-(?P<name>[^/]+))?\.json$")
_EMBEDDINGS = re.compile(r"^embeddings_sample(?:-(?P<name>[^/]+))?\.npz$")


@dataclass
class EmbeddingSample:
    """Probe-test features saved by the evaluation (``embeddings_sample*.npz``).

    Attributes:
        labels: int ``[N]``.
        class_names: the label names, ``[C]`` (may be empty).
        features: ``{"trained": [N, F], "random_init": ..., "raw_input": ...}``; with several
            encoders ``"trained:KEY"``.
    """

    labels: np.ndarray
    class_names: list[str]
    features: dict[str, np.ndarray]


@dataclass
class RunRecord:
    """Everything the report shows of one run directory."""

    directory: Path
    recipe: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    #: ``""`` for ``evaluation.json``, ``NAME`` for ``evaluation-NAME.json``.
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)
    embeddings: dict[str, EmbeddingSample] = field(default_factory=dict)
    #: PNG files the objectives wrote in the run directory, by file name.
    pictures: dict[str, bytes] = field(default_factory=dict)
    #: ``.txt`` files the objectives wrote in the run directory (masked-text examples), by file name.
    texts: dict[str, str] = field(default_factory=dict)
    #: ``augmentation_samples/``: PNG bytes or text, by file name.
    augmentation_samples: dict[str, bytes | str] = field(default_factory=dict)
    #: ``finetune/NAME/finetune.json`` of each finished fine-tune, by NAME.
    finetunes: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The recipe's name and the directory's, e.g. ``toy (runs/toy-2026...)``."""
        recipe_name = self.recipe.get("name") if isinstance(self.recipe, dict) else None
        return f"{recipe_name} ({self.directory.name})" if recipe_name else self.directory.name


def load_run(directory: Path) -> RunRecord:
    """Read a run directory; an error when it is not one."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SSLHubError(f"{directory}: no such run directory")
    if not any((directory / name).is_file() for name in RUN_FILES):
        raise SSLHubError(f"{directory} is not a run directory: it holds none of {', '.join(RUN_FILES)}")
    record = RunRecord(directory=directory)
    record.recipe = _read(record, "recipe.yaml", lambda text: yaml.safe_load(text) or {}) or {}
    record.environment = _read(record, "environment.json", json.loads) or {}
    record.summary = _read(record, "summary.json", json.loads) or {}
    record.metrics = _read(record, "metrics.jsonl", _json_lines) or []
    record.events = _read(record, "events.jsonl", _json_lines) or []
    for path in sorted(directory.iterdir()):
        _read_entry(record, path)
    folder = directory / "augmentation_samples"
    if _inside(directory, folder) and folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.suffix == ".txt" and _inside(directory, path):
                record.augmentation_samples[path.name] = _read_text(path)
            elif path.suffix == ".png":
                _read_picture(record, path, record.augmentation_samples)
    _read_finetunes(record)
    return record


def _read_finetunes(record: RunRecord) -> None:
    """``finetune/NAME/finetune.json`` (written by ``sslhub finetune``), each a dict, by NAME."""
    folder = record.directory / "finetune"
    if not (_inside(record.directory, folder) and folder.is_dir()):
        return
    for path in sorted(folder.glob("*/finetune.json")):
        if _inside(record.directory, path) and path.is_file():
            loaded = _read(record, str(path.relative_to(record.directory)), json.loads)
            if isinstance(loaded, dict):
                record.finetunes[path.parent.name] = loaded


def _read_entry(record: RunRecord, path: Path) -> None:
    evaluation, embeddings = _EVALUATION.match(path.name), _EMBEDDINGS.match(path.name)
    if evaluation:
        loaded = _read(record, path.name, json.loads)
        if isinstance(loaded, dict):
            record.evaluations[evaluation.group("name") or ""] = loaded
    elif embeddings:
        sample = _read_embeddings(record, path)
        if sample is not None:
            record.embeddings[embeddings.group("name") or ""] = sample
    elif path.suffix == ".png":
        _read_picture(record, path, record.pictures)
    elif path.suffix == ".txt" and _inside(record.directory, path) and path.is_file():
        record.texts[path.name] = _read_text(path)


def _read_text(path: Path, limit: int = MAX_TEXT_CHARS) -> str:
    with path.open(encoding="utf-8", errors="replace") as file:
        return file.read(limit)


def _inside(directory: Path, path: Path) -> bool:
    """Whether ``path`` is a regular file or folder that really lies inside ``directory`` (links resolved)."""
    try:
        return path.resolve().is_relative_to(directory.resolve()) and (path.is_file() or path.is_dir())
    except OSError:
        return False


def _read(record: RunRecord, name: str, parse) -> Any:
    path = record.directory / name
    if not path.exists():
        return None
    if not _inside(record.directory, path) or not path.is_file():
        record.problems.append(f"{name}: not a file inside the run directory; left out")
        return None
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        record.problems.append(f"{name}: unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
        return None


def _json_lines(text: str) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a torn last line (a killed run) is left out."""
    records = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("step"), int | float) and math.isfinite(value["step"]):
            records.append(value)
    return records


def _read_picture(record: RunRecord, path: Path, into: dict[str, Any]) -> None:
    if not _inside(record.directory, path) or not path.is_file():
        return
    if path.stat().st_size > MAX_PICTURE_BYTES:
        record.problems.append(f"{path.name}: larger than {MAX_PICTURE_BYTES // 2**20} MiB; left out")
        return
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        record.problems.append(f"{path.name}: not a PNG file; left out")
        return
    into[path.name] = data


def _read_embeddings(record: RunRecord, path: Path) -> EmbeddingSample | None:
    if not _inside(record.directory, path):
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            labels = np.asarray(arrays["labels"]).astype(np.int64)
            names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays.files else []
            features = {
                key: np.asarray(arrays[key], dtype=np.float32)
                for key in arrays.files
                if key not in ("labels", "class_names")
            }
    except (OSError, ValueError, KeyError) as exc:
        record.problems.append(
            f"{path.name}: unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        )
        return None
    good = {k: v for k, v in features.items() if v.ndim == 2 and v.shape[0] == labels.shape[0]}
    if len(good) != len(features) or labels.ndim != 1:
        record.problems.append(f"{path.name}: arrays of unexpected shapes; those left out")
    return EmbeddingSample(labels=labels, class_names=names, features=good) if good and labels.ndim == 1 else None
