"""The callbacks every run has: metrics file, progress bar, TensorBoard, the non-finite policy, and
early stopping when the recipe asks for it.

Each does on an event what the loop used to do inline, at the same cost: nothing per step
beyond a progress-bar tick, and file writes only on logging steps.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import IO, Any

from sslhub.callbacks import Callback, NonFiniteStep, RunInfo, StepEnd, TrainEnd, TrainStart, ValidationDone
from sslhub.early_stopping import EarlyStopping, EarlyStoppingSpec
from sslhub.errors import NonFiniteLossError, SSLHubError
from sslhub.run_events import record_event

log = logging.getLogger("sslhub")


class MetricsFile(Callback):
    """Appends each logging step's record, and each validation's, to ``metrics.jsonl`` (one JSON object a line).

    A validation row holds ``step``, ``epoch`` and the ``val_*`` figures only.
    """

    def __init__(self, path: Path):
        self.path = path
        self._file: IO[str] | None = None

    def on_train_start(self, run: RunInfo, event: TrainStart) -> None:
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in on_train_end

    def on_step_end(self, run: RunInfo, event: StepEnd) -> None:
        if event.metrics is not None:
            self._write(event.metrics)

    def on_validation(self, run: RunInfo, event: ValidationDone) -> None:
        self._write({"step": event.step, "epoch": event.epoch, **event.metrics})

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def on_train_end(self, run: RunInfo, event: TrainEnd) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ProgressBar(Callback):
    """A tqdm bar of steps, showing the loss and throughput of the last logging step."""

    def __init__(self, description: str):
        self.description = description
        self._bar: Any = None

    def on_train_start(self, run: RunInfo, event: TrainStart) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=event.total_steps, initial=event.start_step, desc=self.description, unit="step", dynamic_ncols=True
        )

    def on_step_end(self, run: RunInfo, event: StepEnd) -> None:
        if event.metrics is not None:
            self._bar.set_postfix(loss=f"{event.loss:.4f}", samples_s=f"{event.metrics['samples_per_s']:.0f}")
        self._bar.update(1)

    def on_train_end(self, run: RunInfo, event: TrainEnd) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class TensorBoardLogger(Callback):
    """Writes each logging step's record as scalars under ``RUN_DIR/tensorboard``."""

    def __init__(self, directory: Path, writer_class: Any):
        self.directory, self.writer_class = directory, writer_class
        self._writer: Any = None

    @classmethod
    def if_available(cls, directory: Path) -> TensorBoardLogger | None:
        """The logger, or ``None`` when TensorBoard is not installed."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return cls(directory, SummaryWriter)

    def on_train_start(self, run: RunInfo, event: TrainStart) -> None:
        self._writer = self.writer_class(str(self.directory))

    def on_step_end(self, run: RunInfo, event: StepEnd) -> None:
        if event.metrics is None:
            return
        for key, value in event.metrics.items():
            if key != "step":
                self._writer.add_scalar(key, value, event.step)

    def on_validation(self, run: RunInfo, event: ValidationDone) -> None:
        for key, value in event.metrics.items():
            self._writer.add_scalar(key, value, event.step)

    def on_train_end(self, run: RunInfo, event: TrainEnd) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class NonFinitePolicy(Callback):
    """``train.nonfinite``: ``raise`` stops at the first non-finite step; ``skip_step`` skips it.

    Skipping cannot help once the weights themselves are non-finite (an earlier update with
    finite gradients overflowed them): that is checked only on a non-finite step, so finite
    steps pay no extra host sync. More than ``max_skipped`` skips in a row stop the run.
    """

    def __init__(self, mode: str, max_skipped: int):
        self.mode, self.max_skipped = mode, max_skipped

    def on_nonfinite(self, run: RunInfo, event: NonFiniteStep) -> None:
        where, culprit = f"step {event.step}", event.culprit
        if self.mode == "raise":
            raise NonFiniteLossError(
                f"non-finite loss or gradient at {where} from {culprit}; lower train.optimizer.lr, set "
                f"train.grad_clip, or set train.nonfinite: skip_step. The last checkpoint is intact."
            )
        broken = event.nonfinite_weights()
        if broken:
            raise NonFiniteLossError(
                f"non-finite loss at {where} from {culprit}, and the weights themselves are non-finite "
                f"({', '.join(broken[:3])}{', ...' if len(broken) > 3 else ''}): an earlier update overflowed them, so "
                "skipping steps cannot recover. Lower train.optimizer.lr or set train.grad_clip; "
                "the last checkpoint is intact."
            )
        log.warning("skipping %s: non-finite value from %s", where, culprit)
        if event.skipped_in_a_row > self.max_skipped:
            raise NonFiniteLossError(
                f"{event.skipped_in_a_row} steps in a row had non-finite values (last at {where}, from {culprit}); "
                "stopping. Lower the learning rate or use precision: fp32."
            )


class RunEventsFile(Callback):
    """``events.jsonl``: resumes, skipped steps and an early stop (``stopped``: its ``reason`` and details).

    Registered after :class:`NonFinitePolicy`, so a non-finite step that stops the run is not
    recorded as skipped.
    """

    def __init__(self, run_dir: Path, record_skipped: bool):
        self.run_dir, self.record_skipped = run_dir, record_skipped

    def on_train_start(self, run: RunInfo, event: TrainStart) -> None:
        if run.resumed:
            record_event(self.run_dir, "resumed", event.start_step)

    def on_nonfinite(self, run: RunInfo, event: NonFiniteStep) -> None:
        if self.record_skipped:
            record_event(self.run_dir, "skipped_step", event.step, culprit=event.culprit)

    def on_train_end(self, run: RunInfo, event: TrainEnd) -> None:
        if event.stop is not None:
            record_event(self.run_dir, "stopped", event.step, reason=event.stop.reason, **event.stop.details)


def validation_key(monitor: str) -> str:
    """The ``metrics.jsonl`` key of a monitored figure: ``loss`` -> ``val_loss``, ``mlm/mlm_accuracy`` -> ``val_mlm/...``."""
    return monitor if monitor.startswith("val_") else f"val_{monitor}"


class EarlyStoppingCallback(Callback):
    """``train.early_stopping``: watch one validation figure, keep the best weights, stop when it stalls.

    Added on every rank: validations give every rank the same figures, so each decides alike
    (and the loop agrees on the stop anyway). Its tracker is saved in every checkpoint, so a
    resumed run stops at the step an uninterrupted one does.

    Args:
        spec: the recipe's ``train.early_stopping``.
    """

    def __init__(self, spec: EarlyStoppingSpec):
        self.spec = spec
        self.tracker = EarlyStopping(spec)
        self.key = validation_key(spec.monitor)

    def on_train_start(self, run: RunInfo, event: TrainStart) -> None:
        if self.tracker.should_stop:  # resumed from the checkpoint of the step it decided at
            self._request_stop(run)

    def on_validation(self, run: RunInfo, event: ValidationDone) -> None:
        value = event.metrics.get(self.key)
        if value is None:
            names = ", ".join(k.removeprefix("val_") for k in event.metrics) or "none"
            raise SSLHubError(
                f"train.early_stopping.monitor: '{self.spec.monitor}' is not a validation figure of this run; "
                f"it has: {names}"
            )
        if self.tracker.update(value, event.step):
            event.save_best()
        if self.tracker.should_stop:
            self._request_stop(run)

    def _request_stop(self, run: RunInfo) -> None:
        decision = self.tracker.stopped
        assert decision is not None
        details = {"monitor": decision.monitor, "best_step": decision.best_step, "best_value": decision.best_value}
        run.request_stop(f"early stopping: {decision.reason}", **details)

    def state_dict(self) -> dict[str, Any]:
        return self.tracker.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state)
