"""Turning ``evaluation.json`` files into the suite's table (Markdown + JSON).

Reads only the keys of the evaluation interface: per encoder kind (``trained``,
``random_init``, ``raw_input``) the 5-shot probe mean and std (``few_shot_5_accuracy``,
``few_shot_5_std``) and the full-label probe (``linear_probe_accuracy``). A missing key is
shown as "n/a", never guessed.
"""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

KINDS = ("trained", "random_init", "raw_input")
BASELINES = KINDS[1:]
KIND_TITLES = {"trained": "trained", "random_init": "random init", "raw_input": "raw input"}
FEW_SHOT_KEY = "few_shot_5_accuracy"
FEW_SHOT_STD_KEY = "few_shot_5_std"
FULL_KEY = "linear_probe_accuracy"
PROBES = {"5-shot": FEW_SHOT_KEY, "full-label": FULL_KEY}
#: Issue 20's figure: the points by which the trained encoder's 5-shot probe must lead each baseline.
FIGURE_LEAD = {"random_init": 5.0, "raw_input": 5.0}
#: Sets whose figure asks more: on the spoken digits (set ``audio``) 10 points over the pooled log-mel.
FIGURE_LEAD_BY_SET = {"audio": {"raw_input": 10.0}}


@dataclass
class Row:
    """One recipe's result on its modality's set.

    Attributes:
        recipe: recipe file stem (``audio_masked``).
        modality: suite set it ran on.
        steps: training steps it ran.
        seconds: wall time of ``sslhub run``.
        scores: ``{kind: {metric key: value}}`` for the kinds in :data:`KINDS`.
        eval_split: the evaluation's ``eval_split`` entry (sizes, groups), when present.
        error: why the run produced no scores, or None.
        per_seed: ``{seed: scores}`` of each run when the row is their mean (``run.py --seeds``).
    """

    recipe: str
    modality: str
    steps: int | None = None
    seconds: float | None = None
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    eval_split: dict | None = None
    error: str | None = None
    per_seed: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)

    def score(self, kind: str, key: str) -> float | None:
        return self.scores.get(kind, {}).get(key)

    def leads(self) -> dict[str, float]:
        """The trained encoder's 5-shot lead over each baseline it has a score for, in points."""
        trained = self.score("trained", FEW_SHOT_KEY)
        found = {}
        for kind in BASELINES:
            other = self.score(kind, FEW_SHOT_KEY)
            if trained is not None and other is not None:
                found[kind] = round(100 * (trained - other), 1)
        return found

    def figure_shortfalls(self) -> list[str]:
        """Plain sentences for each baseline the 5-shot lead falls short of issue 20's figure over
        (:data:`FIGURE_LEAD`); a baseline without a score is a shortfall too: the figure is unknown."""
        required = {**FIGURE_LEAD, **FIGURE_LEAD_BY_SET.get(self.modality, {})}
        leads = self.leads()
        found = []
        for kind, points in required.items():
            if kind not in leads:
                found.append(f"no 5-shot lead over {KIND_TITLES[kind]}: a score is missing")
            elif leads[kind] < points:
                found.append(f"5-shot lead over {KIND_TITLES[kind]} {leads[kind]:+.1f} points, under {points:g}")
        return found

    def losses(self) -> list[str]:
        """Plain sentences for each probe where the trained encoder does not beat a baseline (on the
        mean over seeds, then at each seed)."""
        found = _losses(self.scores)
        for seed, scores in self.per_seed.items():
            found += [f"seed {seed}: {loss}" for loss in _losses(scores)]
        return found


def _losses(scores: dict[str, dict[str, float]]) -> list[str]:
    found = []
    for probe, key in PROBES.items():
        trained = scores.get("trained", {}).get(key)
        for kind in BASELINES:
            other = scores.get(kind, {}).get(key)
            if trained is not None and other is not None and trained <= other:
                verb = "ties with" if trained == other else "LOSES to"
                found.append(f"{probe}: trained {verb} {KIND_TITLES[kind]} ({trained:.3f} vs {other:.3f})")
    return found


def mean_over_seeds(runs: dict[int, Row]) -> Row:
    """One row for a recipe run at several seeds: each score's mean (the 5-shot std: the mean of the
    runs' spreads over draws), the summed time and every run's scores in ``per_seed``; the first
    failed run's error, named by its seed, if any failed."""
    first = next(iter(runs.values()))
    failed = [(seed, row) for seed, row in runs.items() if row.error]
    if failed:
        seed, row = failed[0]
        return Row(first.recipe, first.modality, row.steps, row.seconds, error=f"seed {seed}: {row.error}")
    scores: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        keys = set.intersection(*(set(row.scores.get(kind, {})) for row in runs.values()))
        if keys:
            scores[kind] = {
                key: sum(row.scores[kind][key] for row in runs.values()) / len(runs) for key in sorted(keys)
            }
    seconds = sum(row.seconds or 0.0 for row in runs.values())
    per_seed = {seed: row.scores for seed, row in runs.items()}
    return Row(first.recipe, first.modality, first.steps, seconds, scores, first.eval_split, per_seed=per_seed)


def probe_value(metrics: dict, key: str, encoder: str | None = None) -> float | None:
    """``metrics[key]``, or the one ``<encoder>/<key>`` entry when a recipe has a single prefixed encoder.

    With ``encoder`` (a key such as ``image``), only that encoder's ``image/<key>`` entry.
    """
    if encoder is not None:
        value = metrics.get(f"{encoder}/{key}")
        return None if value is None else float(value)
    if key in metrics:
        return float(metrics[key])
    prefixed = [v for k, v in metrics.items() if k.endswith(f"/{key}")]
    return float(prefixed[0]) if len(prefixed) == 1 else None


def row_from_evaluation(
    recipe: str,
    modality: str,
    evaluation: dict,
    steps: int | None,
    seconds: float | None,
    encoder: str | None = None,
) -> Row:
    """A :class:`Row` from the contents of one ``evaluation.json``; ``encoder`` picks one of several encoders."""
    scores = {}
    for kind in KINDS:
        metrics = evaluation.get(kind)
        if not isinstance(metrics, dict):
            continue
        values = {key: probe_value(metrics, key, encoder) for key in (FEW_SHOT_KEY, FEW_SHOT_STD_KEY, FULL_KEY)}
        scores[kind] = {k: v for k, v in values.items() if v is not None}
    return Row(recipe, modality, steps, seconds, scores, evaluation.get("eval_split"))


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """What the figures were measured on, and when."""
    import torch

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def cell(row: Row, kind: str, key: str) -> str:
    value = row.score(kind, key)
    if value is None:
        return "n/a"
    std = row.score(kind, FEW_SHOT_STD_KEY) if key == FEW_SHOT_KEY else None
    text = f"{value:.3f} ± {std:.3f}" if std is not None else f"{value:.3f}"
    if kind == "trained" and row.per_seed:
        each = [scores.get("trained", {}).get(key) for scores in row.per_seed.values()]
        text += " (" + " / ".join("n/a" if v is None else f"{v:.3f}" for v in each) + ")"
    return text


def verdict(row: Row) -> str:
    if row.error:
        return f"FAILED: {row.error}"
    losses = row.losses()
    if losses:
        return "; ".join(losses)
    if all(row.score(k, key) is not None for k in KINDS for key in PROBES.values()):
        return "beats random init and raw input on both probes"
    return "incomplete scores"


def lead_cell(row: Row) -> str:
    leads = row.leads()
    return " / ".join(f"{leads[kind]:+.1f}" if kind in leads else "n/a" for kind in BASELINES)


def figure_cell(row: Row) -> str:
    if row.error:
        return "n/a"
    shortfalls = row.figure_shortfalls()
    return "MISSED: " + "; ".join(shortfalls) if shortfalls else "met"


def figure_sentence() -> str:
    """Issue 20's figure in words, from :data:`FIGURE_LEAD` and :data:`FIGURE_LEAD_BY_SET`."""
    over = " and ".join(f"{KIND_TITLES[kind]} by {points:g}" for kind, points in FIGURE_LEAD.items())
    special = "; ".join(
        f"on the set `{name}`: " + " and ".join(f"{KIND_TITLES[kind]} by {points:g}" for kind, points in leads.items())
        for name, leads in FIGURE_LEAD_BY_SET.items()
    )
    return f"The figure (issue 20): the trained encoder's 5-shot probe leads {over} points ({special})."


def markdown(rows: list[Row], machine: dict, settings: dict) -> str:
    """The results as a Markdown section: machine and settings, the table, then every loss spelled out."""
    lines = [
        "## Real-data suite",
        "",
        f"Measured {machine['date']} on {machine['cpu']} ({machine['usable_cores']} usable of {machine['cores']} cores), "
        f"torch {machine['torch']}, Python {machine['python']}.",
        "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + ".",
        "Probes score unseen groups (voices, typeface designs, source packages, icon and emoji names; pen digits: pretraining "
        "never saw the writers; other tables: random rows).",
        *(
            ["A row run at several seeds shows the means, the trained encoder's figure at each seed in brackets."]
            if any(row.per_seed for row in rows)
            else []
        ),
        figure_sentence(),
        "",
        "| recipe | set | steps | 5-shot trained | 5-shot random init | 5-shot raw input "
        "| full trained | full random init | full raw input | 5-shot lead over random init / raw (points) "
        "| figure | time (s) | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        probes = [cell(row, kind, key) for key in (FEW_SHOT_KEY, FULL_KEY) for kind in KINDS]
        seconds = "n/a" if row.seconds is None else f"{row.seconds:.0f}"
        steps = "n/a" if row.steps is None else str(row.steps)
        lines.append(
            f"| {row.recipe} | {row.modality} | {steps} | "
            + " | ".join(probes)
            + f" | {lead_cell(row)} | {figure_cell(row)} | {seconds} | {verdict(row)} |"
        )
    losing = [(f"{row.recipe}` on `{row.modality}", loss) for row in rows for loss in row.losses()]
    failed = [row for row in rows if row.error]
    if losing or failed:
        lines += ["", "Where a recipe does not beat a baseline or produced no scores:", ""]
    else:
        lines += ["", "No recipe lost to a baseline."]
    lines += [f"- `{recipe}` {loss}" for recipe, loss in losing]
    lines += [f"- `{row.recipe}` on `{row.modality}` did not produce scores: {row.error}" for row in failed]
    missed = [row for row in rows if not row.error and row.figure_shortfalls()]
    if missed:
        lines += ["", "Where the figure is missed:", ""]
        lines += [f"- `{row.recipe}` on `{row.modality}`: " + "; ".join(row.figure_shortfalls()) for row in missed]
    elif rows and not failed:
        lines += ["", "Every recipe meets the figure."]
    return "\n".join(lines).rstrip() + "\n"


def as_json(rows: list[Row], machine: dict, settings: dict) -> dict:
    return {
        "machine": machine,
        "settings": settings,
        "figure": {"lead": FIGURE_LEAD, "lead_by_set": FIGURE_LEAD_BY_SET},
        "rows": [
            {
                **asdict(row),
                "verdict": verdict(row),
                "losses": row.losses(),
                "leads": row.leads(),
                "figure_shortfalls": [] if row.error else row.figure_shortfalls(),
            }
            for row in rows
        ],
    }
