"""Early stopping: watch one validation figure, stop when it stops improving, remember the best.

The tracker is pure bookkeeping (no tensors, no files): the training loop that owns it feeds it
one value per validation, saves the best weights when :meth:`EarlyStopping.update` says the
value improved, and checkpoints :meth:`EarlyStopping.state_dict` with everything else, so a
run killed and resumed stops at exactly the step an uninterrupted run would.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import ConfigDict, Field

from sslhub.components import StrictNumbers

Mode = Literal["min", "max"]


class EarlyStoppingSpec(StrictNumbers):
    """``early_stopping:`` of a recipe section (pretraining's ``train`` or ``finetune``)."""

    model_config = ConfigDict(extra="forbid")

    monitor: str = Field(
        "loss",
        description="the validation figure watched: a held-out loss (lower is better) or an accuracy (higher is better)",
    )
    mode: Mode | None = Field(None, description="min or max; None: max for names with 'accuracy', otherwise min")
    patience: int = Field(5, ge=1, description="validations without improvement before stopping")
    min_delta: float = Field(0.0, ge=0, description="the smallest change that counts as an improvement")
    restore_best: bool = Field(True, description="end with the weights of the best validation, not the last")

    def resolved_mode(self) -> Mode:
        if self.mode is not None:
            return self.mode
        return "max" if "accuracy" in self.monitor else "min"


@dataclass
class StopDecision:
    """Why training stopped early (recorded in the run's results)."""

    step: int
    best_step: int
    best_value: float
    monitor: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class EarlyStopping:
    """Tracks the best value of one monitored figure and counts validations without improvement.

    Args:
        spec: what to watch and how patient to be.
    """

    def __init__(self, spec: EarlyStoppingSpec):
        self.spec = spec
        self.mode: Mode = spec.resolved_mode()
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.bad_validations = 0
        self.stopped: StopDecision | None = None

    def improves(self, value: float) -> bool:
        """Whether ``value`` beats the best so far by more than ``min_delta`` (NaN never does)."""
        if math.isnan(value):
            return False
        if self.best_value is None:
            return True
        if self.mode == "min":
            return value < self.best_value - self.spec.min_delta
        return value > self.best_value + self.spec.min_delta

    def update(self, value: float, step: int) -> bool:
        """Record one validation; returns True when it is the new best (save the weights then)."""
        if self.improves(value):
            self.best_value, self.best_step, self.bad_validations = float(value), step, 0
            return True
        self.bad_validations += 1
        if self.bad_validations >= self.spec.patience and self.stopped is None:
            self.stopped = StopDecision(
                step=step,
                best_step=self.best_step if self.best_step is not None else step,
                best_value=self.best_value if self.best_value is not None else float("nan"),
                monitor=self.spec.monitor,
                reason=f"{self.spec.monitor} did not improve by more than {self.spec.min_delta:g} "
                f"in {self.spec.patience} validation(s)",
            )
        return False

    @property
    def should_stop(self) -> bool:
        return self.stopped is not None

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_value": self.best_value,
            "best_step": self.best_step,
            "bad_validations": self.bad_validations,
            "stopped": self.stopped.as_dict() if self.stopped else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value = state["best_value"]
        self.best_step = state["best_step"]
        self.bad_validations = int(state["bad_validations"])
        self.stopped = StopDecision(**state["stopped"]) if state["stopped"] else None
