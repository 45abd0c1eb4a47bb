"""The words that mark a line of the evaluation's verdict (``evaluation.json``, ``verdict``) as a loss
or as a narrow win. :func:`sslhub.evaluation.verdict` writes the lines with them; the end-of-run
summary and the HTML report read each line's outcome back with them. Torch-free, as the report is."""

from __future__ import annotations

from collections.abc import Sequence

#: in a line where the trained encoder does not beat the baseline
LOSS = "does NOT beat"
#: in a line whose few-shot gap is smaller than the spread of the trained encoder's draws
NARROW = "within the spread of the draws"


def is_loss(line: str) -> bool:
    return LOSS in line


def narrow_wins(lines: Sequence[str]) -> list[str]:
    """The wins smaller than the spread of the few-shot draws (they may be the luck of the labels drawn)."""
    return [line for line in lines if NARROW in line and not is_loss(line)]


def narrow_wins_clause(count: int) -> str:
    """``", 2 of them by less than the spread of the few-shot draws"``, to follow "beats every baseline"; "" for none."""
    return f", {count} of them by less than the spread of the few-shot draws" if count else ""
