"""Training events and the callbacks that receive them.

The training loop announces what happens (start, every step, a non-finite step, a held-out
validation, a checkpoint, the end of training, the evaluation) as small typed events; everything that reacts to them,
the progress bar, ``metrics.jsonl``, TensorBoard and the non-finite policy included, is a
:class:`Callback`. A plugin adds its own through the ``sslhub_register_callbacks`` hook
(see docs/hooks.md), so a logger or an online probe needs no change to the core. A callback
asks the loop to stop after the current step with :meth:`RunInfo.request_stop` (early stopping
does it this way); a callback with state to keep over a resume returns it from
:meth:`Callback.state_dict` and it is saved in every checkpoint.

Events never cost a host-device sync: a step's ``loss`` and ``grad_norm`` are the floats the
loop reads once per step anyway, and ``metrics`` (every logged objective metric as a float)
is filled only on the steps where the loop writes ``metrics.jsonl`` (``train.log_every``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslhub.errors import SSLHubError

log = logging.getLogger("sslhub")

EVENTS = (
    "on_train_start",
    "on_step_end",
    "on_nonfinite",
    "on_validation",
    "on_checkpoint",
    "on_train_end",
    "on_evaluation",
)


@dataclass(frozen=True)
class StopRequest:
    """A callback asked the loop to stop: why, and facts worth recording (JSON-serialisable).

    Attributes:
        reason: in words, for the run's events, summary and log.
        details: e.g. ``best_step`` and ``best_value`` of early stopping.
    """

    reason: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class _StopFlag:
    request: StopRequest | None = None


@dataclass(frozen=True)
class RunInfo:
    """What a callback may want to know about the run before it starts.

    Attributes:
        run_dir: the run directory (``metrics.jsonl``, checkpoints, ``evaluation.json``).
        name: the recipe's ``name``.
        recipe: the resolved recipe as plain data (what ``recipe.yaml`` holds).
        device: the training device, e.g. ``"cpu"`` or ``"cuda:0"``.
        rank: this process's rank; ``is_main`` is rank 0.
        world_size: the number of training processes.
        resumed: the run continues from a checkpoint.
    """

    run_dir: Path
    name: str
    recipe: dict[str, Any]
    device: str
    rank: int = 0
    world_size: int = 1
    resumed: bool = False
    _stop: _StopFlag = field(default_factory=_StopFlag, compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def request_stop(self, reason: str, **details: Any) -> None:
        """Ask the loop to stop training after the current step; the first request wins.

        Call it from any event of the training loop. The loop saves a checkpoint at that step,
        ends with :class:`TrainEnd` ``status="completed"`` and its ``stop`` set, and the run
        goes on to evaluation and export as after its last step. Under torchrun a request made
        on any rank stops every rank at the same step (one small collective per step).

        Args:
            reason: why, in words (recorded in ``events.jsonl`` and printed).
            details: JSON-serialisable facts recorded with it.
        """
        if self._stop.request is None:
            self._stop.request = StopRequest(reason, dict(details))

    @property
    def stop_request(self) -> StopRequest | None:
        """The pending or granted stop request, if a callback made one."""
        return self._stop.request


@dataclass(frozen=True)
class TrainStart:
    """Training is about to run its first step (``start_step`` > 0 after a resume)."""

    start_step: int
    total_steps: int


@dataclass(frozen=True)
class StepEnd:
    """One optimizer step is done (or skipped after a non-finite value).

    Attributes:
        step: steps done so far, this one included (1 after the first).
        epoch: the epoch the next batch comes from.
        total_steps: the steps the run trains for.
        loss: the weighted total loss of the step (mean over gradient accumulation).
        grad_norm: the gradient norm before clipping.
        lr: the learning rate of the first parameter group after the schedule stepped.
        skipped: the update was not applied (non-finite loss or gradient, ``train.nonfinite: skip_step``).
        metrics: on logging steps, the record written to ``metrics.jsonl`` (``loss``, ``lr``,
            ``grad_norm``, ``samples_per_s``, ``OBJECTIVE/loss``, ``OBJECTIVE/METRIC``, all floats);
            ``None`` on the other steps.
    """

    step: int
    epoch: int
    total_steps: int
    loss: float
    grad_norm: float
    lr: float
    skipped: bool = False
    metrics: dict[str, float] | None = None


@dataclass(frozen=True)
class NonFiniteStep:
    """A step's loss or gradient was not finite.

    A callback stops the run by raising :class:`sslhub.errors.NonFiniteLossError`; when none
    raises, the step is skipped (its update was not applied). Under ``train.nonfinite: raise``
    the update is already queued when this is sent (the step reads the device once, after
    it), and the built-in policy, the first callback, ends the run: nothing is checkpointed.

    Attributes:
        step: the step that failed (counting from 1).
        culprit: where it came from, e.g. ``"objective 'simclr'"``, ``"gradient"``, ``"another rank"``.
        skipped_in_a_row: non-finite steps in a row, this one included.
        nonfinite_weights: names of the parameters that are non-finite themselves (one host sync; call only if needed).
    """

    step: int
    culprit: str
    skipped_in_a_row: int
    nonfinite_weights: Callable[[], list[str]]


@dataclass(frozen=True)
class ValidationDone:
    """A held-out validation ran after ``step`` (every ``train.validate_every`` steps, and at the last).

    Sent on every rank with the same figures (under torchrun each rank validates a shard and
    the sums are combined), so callbacks on every rank take the same decisions.

    Attributes:
        step: the step just done.
        epoch: the epoch the next batch comes from.
        metrics: ``val_loss`` (the weighted total objective loss on held-out data, with the
            training augmentations drawn from a fixed seed) and ``val_OBJECTIVE/METRIC`` for
            each objective's held-out metrics; all floats.
        save_best: writes the current weights to ``checkpoints/best.pt`` (atomically; rank 0
            writes, other ranks return ``None``) and returns its path; call it on every rank.
    """

    step: int
    epoch: int
    metrics: dict[str, float]
    save_best: Callable[[], Path | None]


@dataclass(frozen=True)
class CheckpointSaved:
    """A checkpoint of ``step`` was written to ``path`` (``None`` on ranks other than 0)."""

    step: int
    path: Path | None


@dataclass(frozen=True)
class TrainEnd:
    """Training stopped: ``status`` is ``"completed"``, ``"interrupted"`` (a signal) or ``"failed"``.

    ``stop`` is set when a callback ended training before ``total_steps`` with
    :meth:`RunInfo.request_stop` (``status`` is ``"completed"`` then).
    """

    step: int
    train_seconds: float
    status: str
    stop: StopRequest | None = None


@dataclass(frozen=True)
class EvaluationDone:
    """``evaluation.json`` was written (after :class:`TrainEnd`, on rank 0 only); ``report`` is its content."""

    report: dict[str, Any]


class Callback:
    """Receives training events; override the methods for the events you want.

    Methods run in the training process, between steps: keep per-step work small (no
    ``.item()`` on tensors: the events already hold floats). Raising stops the run with an
    error naming the plugin, except :class:`sslhub.errors.SSLHubError` subclasses, which pass
    through as they are (so a callback may stop training with ``NonFiniteLossError``).
    """

    def on_train_start(self, run: RunInfo, event: TrainStart) -> None:
        """Before the first step."""

    def on_step_end(self, run: RunInfo, event: StepEnd) -> None:
        """After every step; ``event.metrics`` is filled on logging steps."""

    def on_nonfinite(self, run: RunInfo, event: NonFiniteStep) -> None:
        """A non-finite step; raise ``NonFiniteLossError`` to stop, return to skip it."""

    def on_validation(self, run: RunInfo, event: ValidationDone) -> None:
        """After a held-out validation (``train.validate_every``); ``run.request_stop`` ends training."""

    def on_checkpoint(self, run: RunInfo, event: CheckpointSaved) -> None:
        """After a checkpoint is written."""

    def on_train_end(self, run: RunInfo, event: TrainEnd) -> None:
        """When the loop ends, whatever the reason; close files and connections here."""

    def on_evaluation(self, run: RunInfo, event: EvaluationDone) -> None:
        """After the end-of-run evaluation (rank 0 only; not called when evaluation is disabled)."""

    def state_dict(self) -> dict[str, Any] | None:
        """What this callback needs to continue exactly after a resume; ``None``: nothing.

        Saved in every checkpoint (rank 0's callbacks' state; plain data and tensors only) and
        given back to :meth:`load_state_dict` before ``on_train_start`` of a resumed run.
        """
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`state_dict` returned when the checkpoint was written."""


@dataclass
class _Entry:
    callback: Callback
    plugin: str | None


@dataclass
class CallbackRegistry:
    """What ``sslhub_register_callbacks`` receives: the run and a place to add callbacks.

    Attributes:
        run: the run the callbacks will see.
    """

    run: RunInfo
    _entries: list[_Entry] = field(default_factory=list)
    _plugin: str | None = None

    @property
    def entries(self) -> list[_Entry]:
        return list(self._entries)

    def add(self, callback: Callback, *, every_rank: bool = False) -> None:
        """Add ``callback``; it runs on rank 0 only unless ``every_rank``.

        Raises:
            SSLHubError: ``callback`` is not a :class:`Callback`.
        """
        if not isinstance(callback, Callback):
            where = f"plugin '{self._plugin}': " if self._plugin else ""
            raise SSLHubError(
                f"{where}sslhub_register_callbacks added {type(callback).__name__}, which is not an sslhub Callback "
                "(subclass sslhub.Callback)"
            )
        if every_rank or self.run.is_main:
            self._entries.append(_Entry(callback, self._plugin))


class CallbackList:
    """Dispatches each event to the callbacks that override its method, in order.

    Callbacks that keep a method as :class:`Callback` defines it cost nothing for that event.
    """

    def __init__(self, run: RunInfo, entries: list[_Entry]):
        self.run = run
        self._entries = list(entries)
        self._listeners: dict[str, list[tuple[Callable[..., None], _Entry]]] = {
            event: [
                (getattr(entry.callback, event), entry)
                for entry in entries
                if getattr(type(entry.callback), event) is not getattr(Callback, event)
            ]
            for event in EVENTS
        }

    @property
    def wants_steps(self) -> bool:
        """Whether any callback listens to ``on_step_end`` (the loop builds no event otherwise)."""
        return bool(self._listeners["on_step_end"])

    def emit(self, event_name: str, event: Any) -> None:
        for method, entry in self._listeners[event_name]:
            try:
                method(self.run, event)
            except SSLHubError:
                raise
            except Exception as exc:
                if entry.plugin is None:
                    raise
                first = (str(exc).strip().splitlines() or [""])[0]
                raise SSLHubError(
                    f"plugin '{entry.plugin}': callback {type(entry.callback).__name__}.{event_name} raised "
                    f"{type(exc).__name__}: {first}"
                ) from exc

    def _keyed(self) -> list[tuple[str, Callback]]:
        """Each callback under a key that is the same in every run of the recipe (plugin, class, repeat)."""
        keyed, seen = [], {}
        for entry in self._entries:
            base = f"{entry.plugin or 'sslhub'}:{type(entry.callback).__qualname__}"
            seen[base] = seen.get(base, -1) + 1
            keyed.append((f"{base}#{seen[base]}" if seen[base] else base, entry.callback))
        return keyed

    def state_dict(self) -> dict[str, Any]:
        """``{callback key: state}`` of the callbacks that have state (what a checkpoint stores)."""
        states = {key: callback.state_dict() for key, callback in self._keyed()}
        return {key: state for key, state in states.items() if state is not None}

    def load_state_dict(self, states: dict[str, Any]) -> None:
        """Give each callback its saved state; one without saved state starts fresh."""
        for key, callback in self._keyed():
            if key in states:
                callback.load_state_dict(states[key])

    def emit_quietly(self, event_name: str, event: Any) -> None:
        """``emit`` while another error is on its way out: a callback's failure is logged, not raised."""
        try:
            self.emit(event_name, event)
        except Exception as exc:  # noqa: BLE001 - the original error matters more
            log.warning("%s", exc)


def plugin_callbacks(registry: CallbackRegistry, plugin_manager: Any) -> None:
    """Call every plugin's ``sslhub_register_callbacks``, attributing what each adds to it."""
    caller = plugin_manager.hook.sslhub_register_callbacks
    for impl in caller.get_hookimpls():
        registry._plugin = impl.plugin_name
        try:
            impl.function(registry=registry)
        except SSLHubError:
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise SSLHubError(
                f"plugin '{impl.plugin_name}': sslhub_register_callbacks raised {type(exc).__name__}: {first}"
            ) from exc
        finally:
            registry._plugin = None
