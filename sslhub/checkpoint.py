"""Atomic checkpoints with a manifest, rotation that keeps the last good one, and safe loading.

A checkpoint file is written to a temporary name, fsynced and renamed; only then is it
added to ``manifest.json`` (itself replaced atomically). A file missing from the manifest,
or whose size or digest differs from it, is never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from sslhub.errors import CheckpointError

log = logging.getLogger("sslhub")
MANIFEST = "manifest.json"


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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
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

    def _read_manifest(self) -> list[dict[str, Any]]:
        path = self.directory / MANIFEST
        if not path.exists():
            return []
        try:
            entries = json.loads(path.read_text())["checkpoints"]
            return [e for e in entries if isinstance(e, dict) and {"step", "file", "sha256", "size"} <= e.keys()]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("checkpoint manifest %s is unreadable (%s); no checkpoint can be trusted", path, exc)
            return []

    def save(self, state: dict[str, Any], step: int) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"step_{step:08d}.pt"
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
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
        entries = [e for e in self._read_manifest() if e["step"] != step]
        entries.append({"step": step, "file": path.name, "size": path.stat().st_size, "sha256": _sha256(path)})
        entries.sort(key=lambda e: e["step"])
        kept, dropped = entries[-self.keep :], entries[: -self.keep]
        atomic_write_bytes(self.directory / MANIFEST, json.dumps({"checkpoints": kept}, indent=1).encode())
        # Delete only after the manifest no longer points at them, so the last good one always survives.
        for entry in dropped:
            (self.directory / entry["file"]).unlink(missing_ok=True)
        return path

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
