"""The report's "Fine-tuning" section: per fine-tune of a run, the table that says whether pretraining paid off.

Reads what ``sslhub finetune`` wrote (``finetune/NAME/finetune.json``, see :mod:`sslhub.finetune`) as
untrusted data: a field of the wrong type shows as empty, never as an error.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

from sslhub.report.rundir import RunRecord

#: the comparison's candidates, as table columns.
COLUMNS = {
    "pretrained": "fine-tuned from pretrained",
    "random_init": "fine-tuned from random init",
    "linear_probe": "linear probe (frozen)",
}


def finetune_section(runs: Sequence[RunRecord], table: Callable[..., str]) -> str:
    """``<h2>Fine-tuning</h2>`` with one part per fine-tune, or ``""`` when no run has one."""
    parts = []
    for run in runs:
        for name, results in run.finetunes.items():
            title = f"{run.name}: {name}" if len(runs) > 1 else name
            parts.append(f"<h3>{html.escape(title)}</h3>" + _outcome(results) + _comparison(results, table))
    return "<h2>Fine-tuning</h2>" + "".join(parts) if parts else ""


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def _outcome(results: dict[str, Any]) -> str:
    """One line: steps, test accuracy, and when and why it stopped."""
    text = f"{results.get('steps', '?')} steps, test accuracy {_number(results.get('test_accuracy'))}"
    stop = results.get("early_stopping")
    if isinstance(stop, dict):
        stopped = stop.get("stopped")
        if isinstance(stopped, dict):
            text += f"; stopped early at step {stopped.get('step')}: {stopped.get('reason')}"
        if stop.get("best_step") is not None:
            text += f"; best {stop.get('monitor')} {_number(stop.get('best_value'))} at step {stop.get('best_step')}"
            text += " (weights restored)" if stop.get("restored_best") else ""
    return f"<p>{html.escape(text)}</p>"


def _comparison(results: dict[str, Any], table: Callable[..., str]) -> str:
    comparison = results.get("comparison")
    rows = comparison.get("rows") if isinstance(comparison, dict) else None
    if not isinstance(rows, list) or not rows:
        return ""
    rows = [row for row in rows if isinstance(row, dict)]
    columns = [key for key in COLUMNS if any(key in row for row in rows)]
    body = []
    for row in rows:
        shots = "all" if row.get("shots") is None else row.get("shots")
        body.append([shots, *[row.get(key) if isinstance(row.get(key), float) else "-" for key in columns]])
    header = ["labels per class", *[COLUMNS[key] for key in columns]]
    note = f"<p class='note'>test accuracy on {comparison.get('test_samples')} samples, same labeled draw per row</p>"
    return table(header, body) + note
