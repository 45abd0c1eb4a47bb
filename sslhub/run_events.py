"""``events.jsonl`` in a run directory: what happened to a run besides its steps (resumes, skipped steps).

``metrics.jsonl`` holds one record per logged step; a resume or a step skipped for a non-finite
value is not such a record (a skipped step is logged only when it falls on ``train.log_every``).
The run report marks them on its curves from this file. Appending a line is cheap and
never in the way of training: a failure to write is a warning.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("sslhub")

EVENTS_FILE = "events.jsonl"


def record_event(run_dir: Path, event: str, step: int, **details: Any) -> None:
    """Append ``{"event": event, "step": step, "time": unix seconds, **details}`` to ``run_dir/events.jsonl``.

    Args:
        event: ``"resumed"`` (``step``: the checkpoint's step) or ``"skipped_step"``
            (``step``: the step that was skipped, counted from 1), or a plugin's own name.
        step: the optimizer step it concerns.
        details: JSON-serialisable facts (``culprit`` of a skipped step).
    """
    record = {"event": event, "step": int(step), "time": round(time.time(), 3), **details}
    try:
        with open(Path(run_dir) / EVENTS_FILE, "a", encoding="utf-8") as events:
            events.write(json.dumps(record, default=str) + "\n")
    except OSError as exc:
        log.warning("cannot record the %s event in %s: %s", event, run_dir, exc)
