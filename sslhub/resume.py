"""Saving and restoring a training run: weights, optimizer, schedule, scaler, data position, RNG.

:class:`sslhub.checkpoint.CheckpointStore` keeps verified files; this module decides what goes
in them. Rank 0 writes the checkpoint; every other rank keeps its own RNG state in
``checkpoints/rng/step_N.rankR.pt`` beside it (no collective needed), so a resumed distributed
run draws the same augmentations as an uninterrupted one.
"""

from __future__ import annotations

import io
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sslhub import distributed
from sslhub.checkpoint import CheckpointStore, atomic_write_bytes
from sslhub.errors import CheckpointError, NonFiniteLossError

#: Where a checkpoint's model state keeps the encoders' weights (``TrainingModule.encoder``).
ENCODER_PREFIX = "encoder."

log = logging.getLogger("sslhub")


@dataclass
class TrainingState:
    """Where training stands: what a checkpoint stores besides the weights.

    Attributes:
        step: optimizer steps done.
        epoch, batch_in_epoch: the position in the data (see :class:`sslhub.training_data.EpochSampler`).
        skipped_in_a_row: non-finite steps in a row just before this one.
        elapsed: training seconds so far, over every resume.
        callbacks: the callbacks' state (:meth:`sslhub.callbacks.CallbackList.state_dict`) at the last save.
        losses: the total loss of each step of this process (not saved; for the summary).
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    skipped_in_a_row: int = 0
    elapsed: float = 0.0
    callbacks: dict[str, Any] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)


@dataclass
class Trainables:
    """What an optimizer step changes: the module, optimizer, schedule and gradient scaler."""

    module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG a run draws from; on CUDA only ``device``'s generator.

    Asking for every GPU's state (``get_rng_state_all``) would open a CUDA context on each
    visible GPU from every rank, and a CPU run needs none.
    """
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(device)] if device.type == "cuda" else [],
    }


def restore_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore :func:`rng_state`'s states; its tensors may come back on ``device`` (a checkpoint
    loaded with ``map_location=device``), and every RNG setter takes host tensors."""
    random.setstate(_tuples(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state[0], numpy_state[1].cpu().numpy(), *numpy_state[2:]))
    torch.set_rng_state(state["torch"].cpu())
    saved = state.get("cuda") or []
    if device.type == "cuda" and saved:
        # One state per checkpoint now; older checkpoints hold one per visible GPU.
        index = device.index if device.index is not None else torch.cuda.current_device()
        own = saved[0] if len(saved) == 1 else saved[min(index, len(saved) - 1)]
        torch.cuda.set_rng_state(own.cpu(), device)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def nonfinite_parameters(module: nn.Module) -> list[str]:
    """Names of the parameters holding NaN or infinity (one host sync for the whole module)."""
    named = [(name, p) for name, p in module.named_parameters() if p.is_floating_point()]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in named]).tolist()
    return [name for (name, _), ok in zip(named, finite, strict=True) if not ok]


def _load_model(module: nn.Module, payload: dict[str, Any], path: Path, encoders_only: bool = False) -> None:
    """The checkpoint's weights into ``module``, or a :class:`CheckpointError` naming the file.

    ``encoders_only``: only the weights under ``encoder.`` (the training module's encoders), all
    of them; the objectives' are left out.
    """
    if not encoders_only:
        try:
            module.load_state_dict(payload["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {path} does not fit this recipe's model: {_first_line(exc)}") from exc
        return
    state = {key: value for key, value in payload["model"].items() if key.startswith(ENCODER_PREFIX)}
    try:
        result = module.load_state_dict(state, strict=False)
        missing = [key for key in result.missing_keys if key.startswith(ENCODER_PREFIX)]
        if missing or result.unexpected_keys:
            raise RuntimeError(f"missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
    except RuntimeError as exc:
        raise CheckpointError(
            f"the encoder weights in checkpoint {path} do not fit the encoder as it is set now: {_first_line(exc)} "
            "(encoder settings can change how a trained encoder reads out its features, not its layers)"
        ) from exc


def _first_line(exc: BaseException) -> str:
    """The line of ``exc`` that says what is wrong: for torch's state-dict errors, the first
    problem under its "Error(s) in loading state_dict for X:" header."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()] or [type(exc).__name__]
    if lines[0].startswith("Error(s) in loading state_dict") and len(lines) > 1:
        return lines[1]
    return lines[0]


class Checkpointer:
    """Writes and reads a run's checkpoints and the per-rank RNG files beside them.

    Args:
        store: the run's checkpoint store.
        device: the training device (whose CUDA generator is saved).
        recipe_fingerprint: stored, and compared on resume.
        seed: the recipe's seed (a rank without its RNG file reseeds from it).
    """

    def __init__(self, store: CheckpointStore, device: torch.device, recipe_fingerprint: str, seed: int):
        self.store, self.device = store, device
        self.recipe_fingerprint, self.seed = recipe_fingerprint, seed

    def save(self, trainables: Trainables, state: TrainingState) -> Path | None:
        """Save on rank 0 (the path) and the RNG file on other ranks (``None``).

        Raises:
            NonFiniteLossError: the weights are non-finite; the last checkpoint stays as it is.
        """
        if distributed.is_distributed() and distributed.rank() > 0:
            self._save_rank_rng(state.step)
        if not distributed.is_main_process():
            return None
        broken = nonfinite_parameters(trainables.module)
        if broken:  # one host sync per checkpoint, not per step
            raise NonFiniteLossError(
                f"the weights are non-finite at step {state.step} ({', '.join(broken[:3])}): not saving a checkpoint; "
                "the last checkpoint is intact. Lower train.optimizer.lr or set train.grad_clip."
            )
        payload = {
            "step": state.step,
            "epoch": state.epoch,
            "batch_in_epoch": state.batch_in_epoch,
            "elapsed": state.elapsed,
            "callbacks": state.callbacks,
            "model": trainables.module.state_dict(),
            "optimizer": trainables.optimizer.state_dict(),
            "scheduler": trainables.scheduler.state_dict(),
            "scaler": trainables.scaler.state_dict(),
            "rng": rng_state(self.device),
            "recipe_fingerprint": self.recipe_fingerprint,
            "world_size": distributed.world_size(),
        }
        return self.store.save(payload, state.step)

    def restore(self, trainables: Trainables) -> TrainingState:
        """Load the newest good checkpoint into ``trainables`` and the RNGs; return its state."""
        payload, path = self._latest("start a new run instead")
        if payload.get("recipe_fingerprint") != self.recipe_fingerprint:
            log.warning("the recipe differs from the one this checkpoint was trained with; continuing with the new one")
        try:
            trainables.module.load_state_dict(payload["model"])
            trainables.optimizer.load_state_dict(payload["optimizer"])
            trainables.scheduler.load_state_dict(payload["scheduler"])
            trainables.scaler.load_state_dict(payload["scaler"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path} does not fit this recipe's model: {_first_line(exc)}") from exc
        restore_rng_state(payload["rng"], self.device)
        self._restore_rank_rng(payload)
        log.info("resumed from %s at step %d", path, payload["step"])
        return TrainingState(
            step=payload["step"],
            epoch=payload["epoch"],
            batch_in_epoch=payload["batch_in_epoch"],
            elapsed=payload.get("elapsed", 0.0),
            callbacks=payload.get("callbacks") or {},
        )

    def save_best(self, module: nn.Module, step: int) -> Path | None:
        """Save ``module``'s weights as the run's best (``checkpoints/best.pt``) on rank 0; ``None`` elsewhere."""
        if not distributed.is_main_process():
            return None
        return self.store.save_best({"step": step, "model": module.state_dict()}, step)

    def load_best(self, module: nn.Module, encoders_only: bool = False) -> int | None:
        """Load the best weights into ``module`` (only the encoders' with ``encoders_only``) and
        return their step; ``None`` when none were saved."""
        loaded = self.store.load_best(map_location=self.device)
        if loaded is None:
            return None
        payload, path = loaded
        _load_model(module, payload, path, encoders_only)
        log.info("loaded the best weights %s (step %d)", path, payload["step"])
        return payload["step"]

    def load_weights(self, module: nn.Module, encoders_only: bool = False) -> int:
        """Load only the newest good checkpoint's weights into ``module`` (only the encoders' with
        ``encoders_only``); return its step."""
        payload, path = self._latest()
        _load_model(module, payload, path, encoders_only)
        log.info("loaded %s (step %d)", path, payload["step"])
        return payload["step"]

    def _latest(self, advice: str = "") -> tuple[dict[str, Any], Path]:
        loaded = self.store.load_latest(map_location=self.device)
        if loaded is None:
            raise CheckpointError(f"no usable checkpoint in {self.store.directory}" + (f"; {advice}" if advice else ""))
        return loaded

    def rank_rng_file(self, step: int, rank: int) -> Path:
        return self.store.directory / "rng" / f"step_{step:08d}.rank{rank}.pt"

    def _save_rank_rng(self, step: int) -> None:
        """Each rank draws its own augmentation randomness; rank 0's state everywhere would repeat views."""
        rank = distributed.rank()
        path = self.rank_rng_file(step, rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(rng_state(self.device), buffer)
        atomic_write_bytes(path, buffer.getvalue())
        own = sorted(path.parent.glob(f"step_*.rank{rank}.pt"))
        for stale in own[: -self.store.keep]:
            stale.unlink(missing_ok=True)

    def _restore_rank_rng(self, payload: dict[str, Any]) -> None:
        rank = distributed.rank()
        if rank == 0:
            return
        path = self.rank_rng_file(payload["step"], rank)
        if path.is_file() and payload.get("world_size") == distributed.world_size():
            try:
                # weights_only, as for checkpoints: tensors and plain containers, never pickled code.
                restore_rng_state(torch.load(path, map_location="cpu", weights_only=True), self.device)
                return
            except Exception as exc:  # noqa: BLE001 - any unreadable file means "no saved state"
                log.warning("cannot read %s: %s", path, _first_line(exc))
        log.warning(
            "no saved RNG state of rank %d for step %d (another world size, or an older run): "
            "this rank continues with a fresh seed, so the run will not repeat an uninterrupted one exactly",
            rank,
            payload["step"],
        )
        torch.manual_seed(self.seed + 1000003 * rank + payload["step"])
