"""Run-directory bookkeeping: the records beside the checkpoints, and cleaning up after a kill.

A run directory holds ``recipe.yaml``, ``environment.json``, ``metrics.jsonl``,
``summary.json``, ``checkpoints/`` and what evaluation and export write. Only rank 0 writes
these files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from sslhub import distributed
from sslhub.checkpoint import CheckpointStore, atomic_write_bytes, remove_stale_temp_files
from sslhub.recipe import ResolvedRecipe

log = logging.getLogger("sslhub")

RECORDED_PACKAGES = ("torchvision", "torchaudio", "timm", "transformers", "onnx", "onnxruntime")


class RunDirectory:
    """The files of one run directory.

    Args:
        path: the run directory.
        checkpoints: its checkpoint store.
    """

    def __init__(self, path: Path, checkpoints: CheckpointStore):
        self.path, self.checkpoints = Path(path), checkpoints
        self.is_main = distributed.is_main_process()

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    def prepare(self, resume: bool) -> bool:
        """Create the directory, remove what interrupted writes left; return whether to resume.

        A kill before the first checkpoint leaves the recipe and records but nothing to
        continue from: such a run starts again from step 0 with its recipe, saying so.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            for folder in (self.path, self.checkpoints.directory, self.checkpoints.directory / "rng"):
                for stale in remove_stale_temp_files(folder):
                    log.info("removed %s, left by an interrupted write", stale)
        if resume and not self.checkpoints.holds_checkpoints():
            log.info(
                "%s holds no checkpoint (the run stopped before its first one): starting it from the "
                "beginning (step 0) with its recipe",
                self.path,
            )
            self.truncate_metrics(0)
            return False
        return resume

    def truncate_metrics(self, step: int) -> None:
        """Drop the ``metrics.jsonl`` lines after ``step``, which a resumed run writes again."""
        if not self.is_main or not self.metrics_file.exists():
            return
        kept = []
        for line in self.metrics_file.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (ValueError, KeyError):
                continue
        atomic_write_bytes(self.metrics_file, ("\n".join(kept) + "\n" if kept else "").encode())

    def recorded_threads(self) -> int | None:
        """The torch thread count ``environment.json`` recorded, if it is a plausible one (the file is untrusted)."""
        try:
            environment = json.loads((self.path / "environment.json").read_text())
        except (OSError, ValueError):
            return None
        threads = environment.get("torch_threads") if isinstance(environment, dict) else None
        ok = isinstance(threads, int) and not isinstance(threads, bool) and 1 <= threads <= 4 * (os.cpu_count() or 1)
        return threads if ok else None

    def write_records(self, recipe: ResolvedRecipe, device: torch.device, data_fingerprint: str) -> None:
        """``recipe.yaml`` (the resolved recipe) and ``environment.json`` (what the run ran on)."""
        (self.path / "recipe.yaml").write_text(recipe.resolved_yaml())
        environment = {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "device": str(device),
            # a resumed ``train.threads: auto`` run keeps this count (see Run._threads)
            "torch_threads": torch.get_num_threads(),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
            "world_size": distributed.world_size(),
            "plugins": [r.as_dict() for r in recipe.catalog.plugins if not r.blocked],
            "plugin_args": list(recipe.catalog.load_args),
            "data_fingerprint": data_fingerprint,
            "recipe_fingerprint": recipe.fingerprint(),
            "recipe_file": recipe.source.file,
        }
        for package in RECORDED_PACKAGES:
            with contextlib.suppress(Exception):
                environment[package] = version(package)
        atomic_write_bytes(self.path / "environment.json", json.dumps(environment, indent=2).encode())

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_bytes(self.path / "summary.json", json.dumps(summary, indent=2, default=str).encode())
