"""The report page: one self-contained HTML file (inline CSS, PNG images as ``data:`` URIs, no script).

Every string that comes from a run directory is escaped; nothing on the page refers to the
network or to another file, so the page opens from disk anywhere.
"""

from __future__ import annotations

import base64
import html
import statistics
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sslhub.report import plots
from sslhub.report.finetune_section import finetune_section
from sslhub.report.rundir import RunRecord
from sslhub.verdict_words import is_loss, narrow_wins, narrow_wins_clause

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:1400px;color:#222;
padding:0 1em}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee;margin:.3em 0}
.bad{color:#a00}.good{color:#060}.note{color:#666;font-size:.9em}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.85em}
figure{display:inline-block;margin:.4em 1em .4em 0;vertical-align:top}figcaption{font-size:.85em;color:#555}
"""


def render_page(runs: Sequence[RunRecord]) -> str:
    """The whole report for ``runs`` (one run, or several side by side) as an HTML string."""
    names = ", ".join(run.name for run in runs)
    sections = [
        _header(runs),
        _recipe_differences(runs) if len(runs) > 1 else "",
        _training(runs),
        _evaluations(runs),
        finetune_section(runs, table),
        _embedding_maps(runs),
        _examples(runs),
        _environment(runs),
        _problems(runs),
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>sslhub report: {_e(names)}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(s for s in sections if s)
        + "\n</body></html>\n"
    )


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def image(data: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG inline as a base64 ``data:`` URI."""
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(data).decode('ascii')}'>"


def figure_image(figure: Any, alt: str) -> str:
    return image(plots.png(figure), alt) if figure is not None else ""


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A table; a float cell is right-aligned with 4 decimals."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"<td class='num'>{value:.4f}</td>"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"<td class='num'>{value}</td>"
    return f"<td>{_e('' if value is None else value)}</td>"


def _header(runs: Sequence[RunRecord]) -> str:
    rows = []
    for run in runs:
        summary = run.summary
        state = "finished" if summary else "no summary.json (still running, or stopped before the end)"
        rows.append((run.name, str(run.directory), summary.get("steps"), summary.get("final_loss"), state))
    written = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<h1>sslhub run report</h1><p class='note'>written {written}</p>" + table(
        ("run", "directory", "steps", "final loss", "state"), rows
    )


# -- training ---------------------------------------------------------------------


def _training(runs: Sequence[RunRecord]) -> str:
    parts = ["<h2>Training</h2>"]
    figure = plots.training_figure(runs)
    if figure is None:
        parts.append("<p class='note'>No training curves: metrics.jsonl is missing or empty (a run of 0 steps?).</p>")
    else:
        parts.append(figure_image(figure, "loss per objective, metrics and learning rate over steps"))
        parts.append(
            "<p class='note'>Curves from metrics.jsonl (every <code>train.log_every</code> steps). "
            "Stars: the trained encoder's held-out value from evaluation.json; dotted lines: resumes; "
            "red crosses: steps skipped for a non-finite value.</p>"
        )
    for run in runs:
        marks = []
        if plots.resume_steps(run):
            marks.append("resumed at step " + ", ".join(map(str, plots.resume_steps(run))))
        if plots.skipped_steps(run):
            marks.append("skipped steps " + ", ".join(map(str, plots.skipped_steps(run))))
        if marks:
            parts.append(f"<p>{_e(run.name)}: {_e('; '.join(marks))}</p>")
    parts.append(_held_out_table(runs))
    return "\n".join(parts)


def _held_out_table(runs: Sequence[RunRecord]) -> str:
    """The objectives' held-out metrics (evaluation.json), trained beside random init, per run."""
    columns = [(run, c) for run in runs for c in ("trained", "random_init")]
    keys: dict[str, None] = {}
    for run, candidate in columns:
        for key in run.evaluations.get("", {}).get(candidate) or {}:
            if _is_held_out(key):
                keys.setdefault(key, None)
    if not keys:
        return ""
    header = ["held-out metric"] + [_column_name(run, c, len(runs)) for run, c in columns]
    rows = [[key] + [(run.evaluations[""].get(c) or {}).get(key) for run, c in columns] for key in keys]
    return "<h3>Held-out metrics of the objectives</h3>" + table(header, rows)


def _is_held_out(key: str) -> bool:
    """An objective's held-out metric (``mlm/accuracy``) rather than a probe score (``image/knn_accuracy``)."""
    name = key.rsplit("/", 1)[-1]
    is_probe = name in ("knn_accuracy", "linear_probe_accuracy") or plots.FEW_SHOT.match(name) is not None
    return "/" in key and not is_probe and not (name.startswith("few_shot_") and name.endswith("_std"))


def _column_name(run: RunRecord, candidate: str, run_count: int) -> str:
    name = plots.CANDIDATE_NAMES.get(candidate, candidate)
    return f"{run.name}: {name}" if run_count > 1 else name


# -- evaluation -------------------------------------------------------------------


def _evaluation_names(runs: Sequence[RunRecord]) -> list[str]:
    names: dict[str, None] = {}
    for run in runs:
        for name in sorted(run.evaluations, key=lambda n: (n != "", n)):
            names.setdefault(name, None)
    return list(names)


def _evaluation_title(name: str) -> str:
    return "evaluation.json" if not name else f"evaluation-{name}.json"


def _evaluations(runs: Sequence[RunRecord]) -> str:
    names = _evaluation_names(runs)
    if not names:
        return (
            "<h2>Evaluation</h2><p class='note'>No evaluation.json: evaluation was turned off "
            "(<code>evaluate.enabled: false</code>) or has not run yet (<code>sslhub evaluate RUN_DIR</code>).</p>"
        )
    return "\n".join(_evaluation_section(runs, name) for name in names)


def _evaluation_section(runs: Sequence[RunRecord], name: str) -> str:
    title = "Evaluation" if not name else f"Evaluation on {name}"
    parts = [f"<h2>{_e(title)} <span class='note'>({_e(_evaluation_title(name))})</span></h2>"]
    present = [run for run in runs if name in run.evaluations]
    columns = [(run, c) for run in present for c in plots.CANDIDATES if run.evaluations[name].get(c)]
    keys: dict[str, None] = {}
    for run, candidate in columns:
        for key in run.evaluations[name][candidate]:
            if not _is_held_out(key) and not key.endswith("_std"):
                keys.setdefault(key, None)
    if keys:
        header = ["score"] + [_column_name(run, c, len(runs)) for run, c in columns]
        rows = [[key] + [_score(run.evaluations[name][c], key) for run, c in columns] for key in keys]
        parts.append(table(header, rows))
    for run in present:
        parts.append(_verdict(run, run.evaluations[name], len(runs)))
    figure = plots.few_shot_figure(present, name)
    if figure is not None:
        parts.append("<h3>Few-shot accuracy against labels per class</h3>")
        parts.append(
            figure_image(figure, f"few-shot accuracy against labeled samples per class ({name or 'own split'})")
        )
    return "\n".join(parts)


def _score(scores: dict[str, Any], key: str) -> Any:
    """A cell: the score, ``mean ± std`` for few-shot, blank when absent."""
    value = scores.get(key)
    std = scores.get(key.replace("_accuracy", "_std")) if plots.FEW_SHOT.match(key) else None
    if isinstance(value, int | float) and isinstance(std, int | float):
        return f"{value:.4f} ± {std:.4f}"
    return float(value) if isinstance(value, int | float) else value


def _verdict(run: RunRecord, evaluation: dict[str, Any], run_count: int) -> str:
    lines = [line for line in evaluation.get("verdict") or [] if isinstance(line, str)]
    prefix = f"{run.name}: " if run_count > 1 else ""
    split = evaluation.get("eval_split") or {}
    parts = []
    if split:
        sizes = ", ".join(f"{k} {v}" for k, v in split.items() if not isinstance(v, dict))
        parts.append(f"<p class='note'>{_e(prefix)}labeled split: {_e(sizes)}</p>")
    if lines:
        summary = verdict_summary(lines)
        items = "".join(f"<li class='{'bad' if is_loss(line) else 'good'}'>{_e(line)}</li>" for line in lines)
        parts.append(f"<h3>{_e(prefix)}Verdict: {_e(summary)}</h3><ul>{items}</ul>")
    notes = [n for n in evaluation.get("notes") or [] if isinstance(n, str)]
    if notes:
        parts.append("<p class='note'>" + "<br>".join(_e(prefix + n) for n in notes) + "</p>")
    return "\n".join(parts)


def verdict_summary(lines: Sequence[str]) -> str:
    """The verdict's heading: how many comparisons the trained encoder loses, or that it wins them
    all and how many of those wins are smaller than the spread of the few-shot draws."""
    losing = sum(map(is_loss, lines))
    if losing:
        return f"the trained encoder loses {losing} of {len(lines)} comparisons with a baseline"
    among = narrow_wins_clause(len(narrow_wins(lines)))
    return f"the trained encoder beats every baseline on all {len(lines)} comparisons{among}"


# -- embedding maps, examples -----------------------------------------------------


def _embedding_maps(runs: Sequence[RunRecord]) -> str:
    parts = []
    for run in runs:
        for name, sample in sorted(run.embeddings.items()):
            where = f"{run.name}, " if len(runs) > 1 else ""
            caption = (
                f"{where}{_evaluation_title(name)}: {len(sample.labels)} probe-test samples coloured by label; "
                f"t-SNE on at most {plots.TSNE_MAX_POINTS} of them"
            )
            parts.append(
                f"<figure>{figure_image(plots.embedding_figure(sample), caption)}"
                f"<figcaption>{_e(caption)}</figcaption></figure>"
            )
    if not parts:
        return (
            "<h2>Embedding map</h2><p class='note'>No embeddings_sample.npz in the run directory "
            "(evaluation off, no labeled split, or <code>evaluate.embedding_sample: 0</code>).</p>"
        )
    intro = (
        "<p class='note'>The held-out (probe-test) embeddings in two dimensions: the trained encoder beside "
        "the same encoder at its random initialisation and the raw input. Clusters of one colour that the "
        "random init does not have are structure the pretraining made.</p>"
    )
    return "<h2>Embedding map</h2>" + intro + "\n".join(parts)


def _examples(runs: Sequence[RunRecord]) -> str:
    parts = ["<h2>Examples</h2>"]
    for run in runs:
        if len(runs) > 1:
            parts.append(f"<h3>{_e(run.name)}</h3>")
        if run.pictures:
            parts.append("<p class='note'>Drawn by the objectives at evaluation:</p>")
            parts.extend(_figure(data, file) for file, data in run.pictures.items())
        if run.texts:
            parts.append("<p class='note'>Written by the objectives at evaluation:</p>")
            parts.extend(f"<h4>{_e(file)}</h4><pre>{_e(text)}</pre>" for file, text in run.texts.items())
        samples = run.augmentation_samples
        if samples:
            parts.append(
                "<p class='note'>What the augmentations make of a few training samples "
                "(each row: the sample, then its views):</p>"
            )
            for file, value in samples.items():
                parts.append(
                    _figure(value, file) if isinstance(value, bytes) else f"<h4>{_e(file)}</h4><pre>{_e(value)}</pre>"
                )
        if not run.pictures and not run.texts and not samples:
            parts.append(
                "<p class='note'>No pictures in this run directory: its objectives draw none, and its modality "
                "draws no augmentation samples (<code>Modality.augmentation_samples</code>).</p>"
            )
    return "\n".join(parts)


def _figure(data: bytes, caption: str) -> str:
    return f"<figure>{image(data, caption)}<figcaption>{_e(caption)}</figcaption></figure>"


# -- recipes, environment, problems -----------------------------------------------


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    """``{"train.optimizer.lr": 0.01, "augment[0].name": "crop"}`` from a nested recipe."""
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(flatten(inner, f"{path}.{key}" if path else str(key)))
        return flat
    if isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
        flat = {}
        for index, inner in enumerate(value):
            flat.update(flatten(inner, f"{path}[{index}]"))
        return flat
    return {path: value}


_ABSENT = object()


def recipe_differences(runs: Sequence[RunRecord]) -> list[tuple[str, list[Any]]]:
    """``[(field path, [value per run])]`` for every field of the resolved recipes that differs."""
    flats = [flatten(run.recipe) if isinstance(run.recipe, dict) else {} for run in runs]
    paths: dict[str, None] = {}
    for flat in flats:
        paths.update(dict.fromkeys(flat))
    differing = []
    for path in paths:
        values = [flat.get(path, _ABSENT) for flat in flats]
        if any(v != values[0] for v in values[1:]):
            differing.append((path, values))
    return differing


def _recipe_differences(runs: Sequence[RunRecord]) -> str:
    differences = recipe_differences(runs)
    if not differences:
        return "<h2>Recipe differences</h2><p>The resolved recipes (recipe.yaml) are identical.</p>"
    rows = [[path] + ["(absent)" if v is _ABSENT else _yaml_value(v) for v in values] for path, values in differences]
    return (
        "<h2>Recipe differences</h2><p class='note'>Fields of the resolved recipes (recipe.yaml, every default "
        "filled in) that differ between the runs.</p>" + table(["field"] + [run.name for run in runs], rows)
    )


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


ENVIRONMENT_KEYS = (
    ("python", "python"),
    ("torch", "torch"),
    ("torchvision", "torchvision"),
    ("torchaudio", "torchaudio"),
    ("timm", "timm"),
    ("transformers", "transformers"),
    ("onnxruntime", "onnxruntime"),
    ("platform", "platform"),
    ("device", "device"),
    ("device_name", "device name"),
    ("world_size", "processes"),
    ("data_fingerprint", "data fingerprint"),
    ("recipe_fingerprint", "recipe fingerprint"),
    ("recipe_file", "recipe file"),
)


def environment_rows(run: RunRecord) -> dict[str, Any]:
    """What the environment table shows of one run, by row name."""
    environment, summary = run.environment, run.summary
    rows: dict[str, Any] = {label: environment.get(key) for key, label in ENVIRONMENT_KEYS}
    plugins = environment.get("plugins") or []
    rows["plugins"] = ", ".join(
        f"{p.get('name')} {p.get('version') or ''}".strip() for p in plugins if isinstance(p, dict)
    )
    rows["-p arguments"] = " ".join(map(str, environment.get("plugin_args") or []))
    rows["steps"] = summary.get("steps")
    seconds = summary.get("train_seconds")
    rows["training wall time"] = f"{seconds:.1f} s" if isinstance(seconds, int | float) else None
    speeds = [r["samples_per_s"] for r in run.metrics if isinstance(r.get("samples_per_s"), int | float)]
    rows["throughput (median)"] = f"{statistics.median(speeds):.1f} samples/s" if speeds else None
    return rows


def _environment(runs: Sequence[RunRecord]) -> str:
    columns = [environment_rows(run) for run in runs]
    labels = [label for label in columns[0] if any(c.get(label) not in (None, "") for c in columns)]
    rows = [[label] + [c.get(label) for c in columns] for label in labels]
    header = ["environment"] + ([run.name for run in runs] if len(runs) > 1 else ["value"])
    return "<h2>Environment</h2>" + table(header, rows)


def _problems(runs: Sequence[RunRecord]) -> str:
    items = [f"<li>{_e(run.name)}: {_e(problem)}</li>" for run in runs for problem in run.problems]
    return f"<h2>Files left out</h2><ul>{''.join(items)}</ul>" if items else ""
