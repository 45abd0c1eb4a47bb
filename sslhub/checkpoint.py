"""Atomic checkpoints with a manifest, rotation that keeps the last good one, and safe loading.

A checkpoint file is written to a temporary name, fsynced and renamed; only then is it
added to ``manifest.json`` (itself replaced atomically). A file missing from the manifest,
or whose size or digest differs from it, is never trusted.

A run directory is untrusted input (it may have been shared or unpacked from an archive):
manifest entries are checked for types, and a ``file`` must be a checkpoint name in this
folder (``step_NNNNNNNN.pt``), so nothing outside it is ever loaded or deleted. A missing or
unreadable manifest beside checkpoint files is rebuilt from the files that load.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from sslhub.errors import CheckpointError

log = logging.getLogger("sslhub")
MANIFEST = "manifest.json"
#: the best weights of a run with early stopping, and the record that vouches for them.
BEST_FILE, BEST_RECORD = "best.pt", "best.json"
#: what :meth:`CheckpointStore.save` names its files; the only names a manifest may list.
CHECKPOINT_NAME = re.compile(r"step_(\d{8,})\.pt")
#: what :func:`temp_path` names a file being written by process PID.
TEMP_NAME = re.compile(r"\..+\.tmp-(\d+)")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def temp_path(path: Path) -> Path:
    """Where ``path`` is written before the atomic rename: ``.NAME.tmp-PID`` beside it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except (OverflowError, OSError):
        return False
    return True


def remove_stale_temp_files(directory: Path) -> list[Path]:
    """Delete the temporary files of writes interrupted by a kill (their writing process is gone).

    A file whose process is still alive (another rank, a concurrent writer) is left alone.

    Returns:
        The files removed.
    """
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for path in sorted(directory.iterdir()):
        match = TEMP_NAME.fullmatch(path.name)
        if match and not path.is_symlink() and path.is_file() and not _process_alive(int(match[1])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = temp_path(path)
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class CheckpointStore:
    """The ``checkpoints/`` folder of a run."""

    def __init__(self, directory: Path, keep: int = 2):
        self.directory = Path(directory)
        self.keep = keep

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    def checkpoint_files(self) -> list[Path]:
        """The checkpoint files in the folder, by name (plain files only, no links)."""
        if not self.directory.is_dir():
            return []
        return sorted(
            p
            for p in self.directory.iterdir()
            if CHECKPOINT_NAME.fullmatch(p.name) and p.is_file() and not p.is_symlink()
        )

    def holds_checkpoints(self) -> bool:
        """Whether any checkpoint was ever written here (a manifest or a checkpoint file)."""
        return self.manifest_path.exists() or bool(self.checkpoint_files())

    def _read_manifest(self) -> list[dict[str, Any]]:
        """The manifest's entries, checked; rebuilt from the files when missing or unreadable.

        Raises:
            CheckpointError: an entry has a wrong type or names a file that is not a checkpoint
                of this folder (a tampered manifest: never followed).
        """
        path = self.manifest_path
        if not path.exists():
            return self._rebuild_manifest(f"checkpoint manifest {path} is missing") if self.checkpoint_files() else []
        try:
            entries = json.loads(path.read_text())["checkpoints"]
            if not isinstance(entries, list):
                raise TypeError("'checkpoints' is not a list")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return self._rebuild_manifest(f"checkpoint manifest {path} is unreadable ({exc})")
        return [self._checked_entry(entry, index) for index, entry in enumerate(entries)]

    def _checked_entry(self, entry: Any, index: int) -> dict[str, Any]:
        where = f"{self.manifest_path}: checkpoints[{index}]"
        remedy = f"fix {self.manifest_path}, or delete it to rebuild it from the checkpoint files"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where} must be an object with step, file, size and sha256; {remedy}")
        missing = sorted({"step", "file", "size", "sha256"} - entry.keys())
        if missing:
            raise CheckpointError(f"{where} lacks {', '.join(missing)}; {remedy}")
        for key in ("step", "size"):
            value = entry[key]
            if type(value) is not int or value < 0:  # bool is an int subclass: refused too
                raise CheckpointError(f"{where}.{key} must be a non-negative integer, got {value!r}; {remedy}")
        if not isinstance(entry["sha256"], str) or not _SHA256.fullmatch(entry["sha256"]):
            raise CheckpointError(f"{where}.sha256 must be 64 lowercase hex digits, got {entry['sha256']!r}; {remedy}")
        name = entry["file"]
        if not isinstance(name, str) or not CHECKPOINT_NAME.fullmatch(name):
            raise CheckpointError(
                f"{where}.file {name!r} is not a checkpoint file name (step_NNNNNNNN.pt) in {self.directory}: "
                f"only plain file names inside the checkpoint folder are accepted; {remedy}"
            )
        return entry

    def _rebuild_manifest(self, reason: str) -> list[dict[str, Any]]:
        """List the checkpoint files that load (``weights_only``) and hold the step of their name."""
        entries, skipped = [], []
        for path in self.checkpoint_files():
            try:
                step = load_checkpoint(path, "cpu")["step"]
            except CheckpointError as exc:
                skipped.append(f"{path.name} ({exc})")
                continue
            if step != int(CHECKPOINT_NAME.fullmatch(path.name)[1]):
                skipped.append(f"{path.name} (holds step {step!r})")
                continue
            entries.append(self._entry(path, step))
        entries.sort(key=lambda e: e["step"])
        log.warning(
            "%s; rebuilt it from the checkpoint files that load: %s%s",
            reason,
            ", ".join(e["file"] for e in entries) or "none",
            f" (skipped: {'; '.join(skipped)})" if skipped else "",
        )
        try:
            self._write_manifest(entries)
        except OSError as exc:
            log.warning("could not write the rebuilt manifest %s: %s", self.manifest_path, exc)
        return entries

    @staticmethod
    def _entry(path: Path, step: int) -> dict[str, Any]:
        return {"step": step, "file": path.name, "size": path.stat().st_size, "sha256": _sha256(path)}

    def _write_manifest(self, entries: list[dict[str, Any]]) -> None:
        atomic_write_bytes(self.manifest_path, json.dumps({"checkpoints": entries}, indent=1).encode())

    def save(self, state: dict[str, Any], step: int) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        entries = [e for e in self._read_manifest() if e["step"] != step]  # a bad manifest stops before writing
        path = self.directory / f"step_{step:08d}.pt"
        tmp = temp_path(path)
        try:
            with open(tmp, "wb") as handle:
                torch.save(state, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            _fsync_dir(self.directory)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CheckpointError(f"could not write checkpoint {path}: {exc}") from exc
        entries.append(self._entry(path, step))
        entries.sort(key=lambda e: e["step"])
        kept, dropped = entries[-self.keep :], entries[: -self.keep]
        self._write_manifest(kept)
        # Delete only after the manifest no longer points at them, so the last good one always survives.
        # Every name was checked to be a checkpoint of this folder, never a path elsewhere.
        for entry in dropped:
            (self.directory / entry["file"]).unlink(missing_ok=True)
        return path

    def save_best(self, state: dict[str, Any], step: int) -> Path:
        """Write ``best.pt`` (atomically), then ``best.json`` with its step, size and digest.

        Not part of the rotation: the best weights stay whatever checkpoints are dropped.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / BEST_FILE
        buffer = io.BytesIO()
        torch.save(state, buffer)
        try:
            atomic_write_bytes(path, buffer.getvalue())
            atomic_write_bytes(self.directory / BEST_RECORD, json.dumps(self._entry(path, step)).encode())
        except OSError as exc:
            raise CheckpointError(f"could not write the best weights {path}: {exc}") from exc
        return path

    def load_best(self, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path] | None:
        """``best.pt`` when ``best.json`` vouches for it; None when there is none.

        Raises:
            CheckpointError: the file or its record is damaged (a write cut short, a changed file).
        """
        path, record_path = self.directory / BEST_FILE, self.directory / BEST_RECORD
        if not record_path.exists() and not path.exists():
            return None
        try:
            entry = json.loads(record_path.read_text())
            problem = self._verify(path, entry)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problem = f"its record {record_path} is unreadable ({exc})"
        if problem is not None:
            raise CheckpointError(f"the best weights {path} cannot be used: {problem}")
        state = load_checkpoint(path, map_location)
        if state["step"] != entry["step"]:
            raise CheckpointError(f"the best weights {path} hold step {state['step']}, its record says {entry['step']}")
        return state, path

    def load_latest(self, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path] | None:
        """The newest checkpoint that verifies and loads; broken ones are skipped with a warning."""
        for entry in reversed(self._read_manifest()):
            path = self.directory / entry["file"]
            problem = self._verify(path, entry)
            if problem is None:
                try:
                    return load_checkpoint(path, map_location), path
                except CheckpointError as exc:
                    problem = str(exc)
            log.warning("skipping checkpoint %s: %s", path, problem)
        return None

    @staticmethod
    def _verify(path: Path, entry: dict[str, Any]) -> str | None:
        if path.is_symlink():
            return "is a symbolic link; only files inside the checkpoint folder are loaded"
        if not path.exists():
            return "file is missing"
        if path.stat().st_size != entry["size"]:
            return f"size {path.stat().st_size} differs from the manifest's {entry['size']} (partial write?)"
        if _sha256(path) != entry["sha256"]:
            return "content digest differs from the manifest (corrupt file)"
        return None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``: tensors and plain containers only, never pickled code."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and unpickler errors all mean "unusable"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load checkpoint {path}: {first_line}") from exc
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(f"{path} is not an sslhub checkpoint (no model state or step)")
    return state
