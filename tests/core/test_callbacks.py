"""Training events reach a third-party plugin's callbacks through the real ``sslhub run``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from toy_runs import sslhub

from sslhub.callbacks import Callback, CallbackList, CallbackRegistry, RunInfo, StepEnd
from sslhub.errors import SSLHubError

LOGGER = ["-p", "toy_logger_plugin"]


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def _run(out: Path, *overrides: str):
    command = ["run", "tests/data/toy_recipe.yaml", "-p", "toy_plugin", *LOGGER, "-p", "no:vision"]
    command += ["-p", "no:text", "-p", "no:audio", "--out", str(out), "--set", "export=null"]
    for override in ("train.steps=6", "train.log_every=3", "train.checkpoint_every=3", *overrides):
        command += ["--set", override]
    return sslhub(*command)


def test_a_logger_plugin_receives_every_training_event(tmp_path):
    result = _run(tmp_path / "run", "evaluate.linear_probe.epochs=2")
    assert result.returncode == 0, result.stderr
    events = _events(tmp_path / "run")
    names = [e["event"] for e in events]
    assert names[0] == "train_start" and events[0]["total_steps"] == 6 and events[0]["name"] == "toy"
    assert [e["step"] for e in events if e["event"] == "step_end"] == [1, 2, 3, 4, 5, 6]
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [3, 6]
    assert names[-2:] == ["train_end", "evaluation"]
    assert events[-2]["status"] == "completed"
    # metrics only on logging steps: the same records as metrics.jsonl, nothing read in between
    logged = [e["metrics"] for e in events if e["event"] == "step_end" and e["metrics"] is not None]
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged] == [3, 6]
    assert [{k: v for k, v in m.items() if k != "samples_per_s"} for m in logged] == [
        {k: v for k, v in m.items() if k != "samples_per_s"} for m in lines
    ]
    steps = [e for e in events if e["event"] == "step_end"]
    assert steps[0]["lr"] > 0 and all(isinstance(e["lr"], float) and e["loss"] == e["loss"] for e in steps)
    assert "knn_accuracy" in str(events[-1]["keys"]) or "trained" in events[-1]["keys"]


def test_a_resumed_run_starts_its_events_at_the_checkpoint(tmp_path):
    assert _run(tmp_path / "run", "train.steps=3", "evaluate.enabled=false").returncode == 0
    resumed = sslhub(
        "run", "tests/data/toy_recipe.yaml", *LOGGER, "-p", "toy_plugin", "-p", "no:vision", "-p", "no:text",
        "-p", "no:audio", "--resume", str(tmp_path / "run"), "--set", "train.steps=6",
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    starts = [e for e in _events(tmp_path / "run") if e["event"] == "train_start"]
    assert [(s["start_step"], s["total_steps"]) for s in starts] == [(0, 3), (3, 6)]


class _Broken(Callback):
    def on_step_end(self, run, event):
        raise ValueError("no server")


def _step() -> StepEnd:
    return StepEnd(step=1, epoch=0, total_steps=2, loss=1.0, grad_norm=1.0, lr=0.1)


def test_a_failing_plugin_callback_is_named():
    registry = CallbackRegistry(RunInfo(run_dir=Path("."), name="toy", recipe={}, device="cpu"))
    registry._plugin = "mlflow_logger"
    registry.add(_Broken())
    with pytest.raises(SSLHubError, match="plugin 'mlflow_logger': callback _Broken.on_step_end raised ValueError"):
        CallbackList(registry.run, registry.entries).emit("on_step_end", _step())


def test_only_overridden_events_are_dispatched_and_rank_0_only_by_default():
    run = RunInfo(run_dir=Path("."), name="toy", recipe={}, device="cpu", rank=1, world_size=2)
    registry = CallbackRegistry(run)
    registry.add(_Broken())
    assert registry.entries == []
    registry.add(Callback(), every_rank=True)
    callbacks = CallbackList(run, registry.entries)
    assert not callbacks.wants_steps
    callbacks.emit("on_step_end", _step())


def test_adding_something_that_is_not_a_callback_says_so():
    registry = CallbackRegistry(RunInfo(run_dir=Path("."), name="toy", recipe={}, device="cpu"))
    with pytest.raises(SSLHubError, match="not an sslhub Callback"):
        registry.add(object())  # type: ignore[arg-type]


class _Counter(Callback):
    """A callback with state: how many steps it saw (what a patience counter would keep)."""

    def __init__(self):
        self.seen = 0

    def on_step_end(self, run, event):
        self.seen += 1
        if self.seen == 2:
            run.request_stop("seen enough", seen=self.seen)

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.seen = state["seen"]


def test_callback_state_round_trips_by_plugin_and_class_and_the_first_stop_request_wins():
    run = RunInfo(run_dir=Path("."), name="toy", recipe={}, device="cpu")
    registry = CallbackRegistry(run)
    registry._plugin = "counter_plugin"
    registry.add(_Counter())
    registry.add(_Counter())
    registry._plugin = None
    registry.add(Callback())  # no state: not saved
    callbacks = CallbackList(run, registry.entries)
    callbacks.emit("on_step_end", _step())
    callbacks.emit("on_step_end", _step())
    saved = callbacks.state_dict()
    assert saved == {"counter_plugin:_Counter": {"seen": 2}, "counter_plugin:_Counter#1": {"seen": 2}}
    assert run.stop_request is not None and run.stop_request.reason == "seen enough"
    run.request_stop("a later request")
    assert run.stop_request.reason == "seen enough" and run.stop_request.details == {"seen": 2}

    fresh_run = RunInfo(run_dir=Path("."), name="toy", recipe={}, device="cpu", resumed=True)
    fresh = CallbackRegistry(fresh_run)
    fresh._plugin = "counter_plugin"
    fresh.add(_Counter())
    fresh.add(_Counter())
    restored = CallbackList(fresh_run, fresh.entries)
    restored.load_state_dict({**saved, "counter_plugin:_Counter#1": {"seen": 7}, "gone_plugin:Other": {}})
    assert [entry.callback.seen for entry in fresh.entries] == [2, 7]
    assert fresh_run.stop_request is None, "each run has its own stop flag"
