"""The training loop: forward, backward, update, announce, checkpoint; everything else is a callback.

:class:`TrainingLoop` owns the model, optimizer, schedule, gradient scaler and step state.
What reacts to a step (metrics file, progress bar, TensorBoard, the non-finite policy, plugin
loggers) receives events through :class:`sslhub.callbacks.CallbackList`. The loop reads the
device once per step: the loss and gradient norm come back together, after the update is
queued (before it under ``train.nonfinite: skip_step``, which must decide whether to update);
objective metrics are read only on logging steps.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from sslhub import distributed
from sslhub.building import TrainingModule
from sslhub.callbacks import (
    CallbackList,
    CheckpointSaved,
    NonFiniteStep,
    StepEnd,
    TrainEnd,
    TrainStart,
    ValidationDone,
)
from sslhub.components import Batch
from sslhub.errors import NonFiniteLossError, RunInterrupted
from sslhub.recipe import TrainSpec
from sslhub.resume import Checkpointer, Trainables, TrainingState, nonfinite_parameters
from sslhub.training_data import make_views

PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class LoopParts:
    """What the loop trains with.

    Attributes:
        model: what runs the forward pass: ``trainables.module``, maybe DDP-wrapped and compiled.
        trainables: the :class:`~sslhub.building.TrainingModule`, optimizer, schedule and scaler.
        augment: the recipe's augmentations (batch -> view).
        batches: device batches, forever (see :func:`sslhub.training_data.device_batches`).
        total_steps: the step to train up to.
        validate: ``(module, step) -> {"val_loss": ..., ...}``, run every ``train.validate_every``
            steps (see :class:`sslhub.validation.HeldOutValidation`); None: no validation.
    """

    model: nn.Module
    trainables: Trainables
    augment: nn.Sequential
    batches: Iterator[Batch]
    total_steps: int
    validate: Callable[[TrainingModule, int], dict[str, float]] | None = None

    @property
    def module(self) -> TrainingModule:
        return self.trainables.module  # type: ignore[return-value]


def autocast(spec: TrainSpec, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = PRECISION_DTYPES.get(spec.precision)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


class StopSignals:
    """While active, SIGINT and SIGTERM ask the loop to save and stop; a second one stops at once."""

    def __init__(self) -> None:
        self.caught: tuple[str, int] | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.caught is not None:  # a second signal means "now"
            raise KeyboardInterrupt
        self.caught = (signal.Signals(signum).name, 128 + signum)

    def __enter__(self) -> StopSignals:
        if os.environ.get("SSLHUB_NO_SIGNAL_HANDLERS"):
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                break
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class TrainingLoop:
    """Trains ``parts`` from ``state`` to ``parts.total_steps``, announcing each event to ``callbacks``.

    Args:
        parts: model, trainables, augmentations and data.
        state: where training stands (fresh, or restored from a checkpoint).
        spec: the recipe's ``train`` section.
        device: the training device.
        checkpointer: writes checkpoints (and per-rank RNG files).
        callbacks: built-in and plugin callbacks.
    """

    def __init__(
        self,
        parts: LoopParts,
        state: TrainingState,
        spec: TrainSpec,
        device: torch.device,
        checkpointer: Checkpointer,
        callbacks: CallbackList,
    ):
        self.parts, self.state, self.spec, self.device = parts, state, spec, device
        self.checkpointer, self.callbacks = checkpointer, callbacks
        self.is_main = distributed.is_main_process()
        self.num_views = max(o.num_views for o in parts.module.objectives)
        # Listed once: module.parameters() walks every submodule, host time a plain loop does not spend per step.
        self._parameters = list(parts.module.parameters())
        # ``raise`` reads the step's loss and gradient norm after the update is queued, as a plain
        # loop reads its loss: on a GPU the host then queues the optimizer while the device still
        # runs backward. ``skip_step`` must read them first, to decide whether to update.
        self._read_before_update = spec.nonfinite != "raise"
        self._window_start, self._window_samples = time.perf_counter(), 0
        self._saved_step: int | None = None  # the step of the last checkpoint saved or resumed from

    def run(self) -> None:
        """The loop. Raises :class:`RunInterrupted` after saving when a signal arrived.

        A callback's :meth:`~sslhub.callbacks.RunInfo.request_stop` ends it after the current
        step (every rank at the same step), with a checkpoint of that step.
        """
        state, total = self.state, self.parts.total_steps
        status, stopped_early = "failed", False
        self._saved_step = state.step if self.callbacks.run.resumed else None
        try:
            self.callbacks.load_state_dict(state.callbacks)
            self.callbacks.emit("on_train_start", TrainStart(start_step=state.step, total_steps=total))
            with StopSignals() as signals:
                self._window_start, self._window_samples = time.perf_counter(), 0
                self.parts.model.train()
                while state.step < total and not (stopped_early := self._stop_agreed()):
                    self._train_one_step()
                    if state.step % self.spec.checkpoint_every == 0 or state.step == total:
                        self.save_checkpoint()
                    if signals.caught is not None:
                        raise RunInterrupted(*signals.caught, str(self.save_checkpoint()))
                if self._saved_step != state.step:  # stopped between checkpoints, or a baseline run of 0 steps
                    self.save_checkpoint()
                self._check_final_loss()
            status = "completed"
        except RunInterrupted:
            status = "interrupted"
            raise
        finally:
            stop = self.callbacks.run.stop_request if stopped_early else None
            end = TrainEnd(step=state.step, train_seconds=state.elapsed, status=status, stop=stop)
            if status == "failed":
                self.callbacks.emit_quietly("on_train_end", end)
            else:
                self.callbacks.emit("on_train_end", end)

    def _train_one_step(self) -> None:
        """One optimizer step, its announcement, and the validation when one is due."""
        state = self.state
        step_start = time.perf_counter()
        loss_sum, grad_norm_tensor, logged = self._forward_backward()
        if self._read_before_update:
            loss, grad_norm = _read_together(loss_sum, grad_norm_tensor)
            skipped = not self._update_or_skip(loss, grad_norm, logged)
        else:
            self._update()
            loss, grad_norm = _read_together(loss_sum, grad_norm_tensor)
            self._stop_if_nonfinite(loss, grad_norm, logged)
            skipped = False
        self.parts.trainables.scheduler.step()
        state.step += 1
        state.elapsed += time.perf_counter() - step_start
        state.losses.append(loss)
        self._announce_step(loss, grad_norm, logged, skipped)
        every = self.spec.validate_every
        if (
            self.parts.validate is not None
            and every
            and (state.step % every == 0 or state.step == self.parts.total_steps)
        ):
            self._validate()

    def _validate(self) -> None:
        """Validate on the held-out data and announce it; its time is kept out of the throughput."""
        start, step = time.perf_counter(), self.state.step
        metrics = self.parts.validate(self.parts.module, step)  # type: ignore[misc]
        module, checkpointer = self.parts.module, self.checkpointer
        event = ValidationDone(step, self.state.epoch, metrics, save_best=lambda: checkpointer.save_best(module, step))
        self.callbacks.emit("on_validation", event)
        self._window_start += time.perf_counter() - start

    def _stop_agreed(self) -> bool:
        """Whether a callback asked to stop, on any rank (every rank gets the same answer)."""
        run = self.callbacks.run
        asked = run.stop_request is not None
        if not distributed.is_distributed():
            return asked
        flag = torch.tensor([1.0 if asked else 0.0], device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() == 1.0 and not asked:
            run.request_stop("a callback on another rank asked to stop")
        return flag.item() == 1.0

    def save_checkpoint(self) -> Path | None:
        self.state.callbacks = self.callbacks.state_dict()
        path = self.checkpointer.save(self.parts.trainables, self.state)
        self._saved_step = self.state.step
        self.callbacks.emit("on_checkpoint", CheckpointSaved(step=self.state.step, path=path))
        return path

    def _forward_backward(self) -> tuple[Tensor, Tensor, dict[str, Any]]:
        """Accumulate gradients over ``train.grad_accumulation`` batches; unscale and clip them.

        Returns:
            The mean total loss (0-d), the gradient norm before clipping (0-d), both left on
            the device, and the last micro-batch's logged values (tensors, not read).
        """
        spec, model, module = self.spec, self.parts.model, self.parts.module
        scaler, optimizer = self.parts.trainables.scaler, self.parts.trainables.optimizer
        logged: dict[str, Any] = {}
        loss_sum: Tensor | None = None
        for micro in range(spec.grad_accumulation):
            batch = next(self.parts.batches)
            views = make_views(self.parts.augment, batch, self.num_views, spec.channels_last)
            sync = contextlib.nullcontext()
            if isinstance(model, nn.parallel.DistributedDataParallel) and micro < spec.grad_accumulation - 1:
                sync = model.no_sync()
            with sync:
                with autocast(spec, self.device):
                    loss, logged = model(views, module.active_at(self.state.step))
                scaler.scale(loss / spec.grad_accumulation).backward()
            share = loss.detach().float() / spec.grad_accumulation
            loss_sum = share if loss_sum is None else loss_sum + share
            self._window_samples += next(iter(batch.values())).shape[0]
        assert loss_sum is not None  # grad_accumulation >= 1
        scaler.unscale_(optimizer)
        return loss_sum, self._gradient_norm(), logged

    def _gradient_norm(self) -> Tensor:
        """The total gradient norm (0-d, on the device), after clipping the gradients to ``train.grad_clip`` if set.

        Without ``grad_clip`` only the norm is computed (the finite check and the logged
        ``grad_norm`` need it), not a pass that multiplies every gradient by 1.
        """
        grads = [p.grad for p in self._parameters if p.grad is not None]
        if not grads:
            return torch.zeros((), device=self.device)
        norm = torch.nn.utils.get_total_norm(grads)
        if self.spec.grad_clip:
            torch.nn.utils.clip_grads_with_norm_(self._parameters, self.spec.grad_clip, norm)
        return norm

    def _update(self) -> None:
        """Apply the accumulated gradients (the gradient scaler skips overflowing fp16 steps itself)."""
        trainables = self.parts.trainables
        trainables.scaler.step(trainables.optimizer)
        trainables.scaler.update()
        trainables.optimizer.zero_grad(set_to_none=True)

    def _culprit(self, loss: float, grad_norm: float, logged: dict[str, Any]) -> str | None:
        """What was not finite in this step, on any rank (every rank gets the same answer); None: all finite."""
        culprit: str | None = None
        if not math.isfinite(loss):
            culprit = _nonfinite_culprit(logged)
        elif not math.isfinite(grad_norm) and not self.parts.trainables.scaler.is_enabled():
            culprit = "gradient"
        if not self._agree_finite(culprit is None):
            culprit = culprit or "another rank"
        return culprit

    def _update_or_skip(self, loss: float, grad_norm: float, logged: dict[str, Any]) -> bool:
        """Apply the update when every rank's loss and gradient are finite; else ask the callbacks.

        Returns:
            Whether the update was applied.
        """
        trainables = self.parts.trainables
        culprit = self._culprit(loss, grad_norm, logged)
        if culprit is None:
            self.state.skipped_in_a_row = 0
            self._update()
            return True
        trainables.optimizer.zero_grad(set_to_none=True)
        self._announce_nonfinite(culprit)
        if trainables.scaler.is_enabled():
            trainables.scaler.update()
        return False

    def _stop_if_nonfinite(self, loss: float, grad_norm: float, logged: dict[str, Any]) -> None:
        """``train.nonfinite: raise``, checked after the update: a non-finite step ends the run.

        The weights that update touched are never checkpointed: the loop saves only after a
        step that returned, and the policy callback raises here.

        Raises:
            NonFiniteLossError: through the policy callback (or here, should none raise).
        """
        culprit = self._culprit(loss, grad_norm, logged)
        if culprit is None:
            self.state.skipped_in_a_row = 0
            return
        self._announce_nonfinite(culprit)
        raise NonFiniteLossError(f"non-finite loss or gradient at step {self.state.step + 1} from {culprit}")

    def _announce_nonfinite(self, culprit: str) -> None:
        trainables = self.parts.trainables
        self.state.skipped_in_a_row += 1
        event = NonFiniteStep(
            step=self.state.step + 1,
            culprit=culprit,
            skipped_in_a_row=self.state.skipped_in_a_row,
            nonfinite_weights=lambda: nonfinite_parameters(trainables.module),
        )
        self.callbacks.emit("on_nonfinite", event)

    def _agree_finite(self, finite: bool) -> bool:
        if not distributed.is_distributed():
            return finite
        flag = torch.tensor([1.0 if finite else 0.0], device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item() == 1.0)

    def _announce_step(self, loss: float, grad_norm: float, logged: dict[str, Any], skipped: bool) -> None:
        """``on_step_end``; on rank 0's logging steps with the ``metrics.jsonl`` record (the only reads of ``logged``)."""
        if not self.callbacks.wants_steps:
            return
        state, total = self.state, self.parts.total_steps
        lr = self.parts.trainables.scheduler.get_last_lr()[0]
        metrics = None
        if self.is_main and (state.step % self.spec.log_every == 0 or state.step == total):
            now = time.perf_counter()
            throughput = self._window_samples * distributed.world_size() / max(now - self._window_start, 1e-9)
            self._window_start, self._window_samples = now, 0
            metrics = {
                "step": state.step,
                "epoch": state.epoch,
                "loss": loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "samples_per_s": round(throughput, 2),
                **_read_logged(logged),
            }
        self.callbacks.emit(
            "on_step_end", StepEnd(state.step, state.epoch, total, loss, grad_norm, lr, skipped, metrics)
        )

    def _check_final_loss(self) -> None:
        """A run whose last step was not finite has not trained to a usable model: never a success."""
        if self.state.losses and not math.isfinite(self.state.losses[-1]):
            raise NonFiniteLossError(
                f"the final loss (step {self.state.step}) is not finite: the run did not end with a usable model; "
                "lower train.optimizer.lr or set train.grad_clip. The last checkpoint holds finite weights."
            )


def _read_together(loss: Tensor, grad_norm: Tensor) -> tuple[float, float]:
    """The step's one host read: the loss and the gradient norm in one transfer."""
    loss_value, grad_norm_value = torch.stack([loss, grad_norm.detach().float()]).tolist()
    return loss_value, grad_norm_value


def _read_logged(logged: dict[str, Any]) -> dict[str, float]:
    """The logged values as floats, the tensors among them read from the device in one transfer."""
    tensors = [v for v in logged.values() if isinstance(v, Tensor)]
    devices = {t.device for t in tensors}
    # float64 holds every value .item() would give exactly; MPS has no float64
    if len(devices) != 1 or any(t.numel() != 1 for t in tensors) or devices.pop().type == "mps":
        return {k: _to_float(v) for k, v in logged.items()}
    values = iter(torch.stack([t.detach().double().reshape(()) for t in tensors]).tolist())
    return {k: next(values) if isinstance(v, Tensor) else float(v) for k, v in logged.items()}


def _to_float(value: Any) -> float:
    return float(value.item()) if isinstance(value, Tensor) else float(value)


def _nonfinite_culprit(logged: dict[str, Any]) -> str:
    for key, value in logged.items():
        if key.endswith("/loss") and not math.isfinite(_to_float(value)):
            return f"objective '{key.rsplit('/', 1)[0]}'"
    return "total loss"


def last_loss(state: TrainingState) -> float | None:
    """The mean of the last 10 finite step losses (skipped steps left out)."""
    tail = [loss for loss in state.losses[-10:] if math.isfinite(loss)]
    return round(sum(tail) / len(tail), 6) if tail else None
