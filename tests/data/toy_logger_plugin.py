"""A third-party logger plugin: writes every training event it receives to ``events.jsonl``.

What an MLflow or W&B logger would do, with a file instead of a server; it uses only the
public API (``sslhub.Callback`` and the ``sslhub_register_callbacks`` hook).
"""

from __future__ import annotations

import json

import sslhub
from sslhub import hookimpl


class EventRecorder(sslhub.Callback):
    """Appends one JSON line per event to ``RUN_DIR/events.jsonl``."""

    def __init__(self, run: sslhub.RunInfo):
        self.path = run.run_dir / "events.jsonl"

    def _write(self, event: str, **fields) -> None:
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(json.dumps({"event": event, **fields}, default=str) + "\n")

    def on_train_start(self, run, event):
        self._write("train_start", start_step=event.start_step, total_steps=event.total_steps, name=run.name)

    def on_step_end(self, run, event):
        self._write("step_end", step=event.step, loss=event.loss, lr=event.lr, metrics=event.metrics)

    def on_checkpoint(self, run, event):
        self._write("checkpoint", step=event.step, path=str(event.path))

    def on_train_end(self, run, event):
        self._write("train_end", step=event.step, status=event.status)

    def on_evaluation(self, run, event):
        self._write("evaluation", keys=sorted(event.report))


@hookimpl
def sslhub_register_callbacks(registry):
    registry.add(EventRecorder(registry.run))
