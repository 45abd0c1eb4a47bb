"""The report's figures, drawn with matplotlib's object API on the Agg canvas (no pyplot, no display).

Each function takes what :mod:`sslhub.report.rundir` read and returns a ``Figure`` (or None when
there is nothing to draw); :func:`png` turns one into PNG bytes for the page.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before any canvas exists: the report never opens a window

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from sslhub.report.rundir import EmbeddingSample, RunRecord  # noqa: E402

CANDIDATES = ("trained", "random_init", "raw_input")
CANDIDATE_NAMES = {"trained": "trained", "random_init": "random init", "raw_input": "raw input"}
#: above this many points the t-SNE map is drawn on a seeded subsample of them.
TSNE_MAX_POINTS = 1000
FEW_SHOT = re.compile(r"^(?:(?P<prefix>.+)/)?few_shot_(?P<shots>\d+)_accuracy$")
_NOT_CURVES = {"step", "epoch", "samples_per_s"}
_RUN_STYLES = ("-", "--", ":", "-.")


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes (Agg canvas, 100 dpi)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def curve_keys(runs: Sequence[RunRecord]) -> list[str]:
    """The metrics.jsonl keys to draw: ``loss``, each objective's loss then its metrics, ``lr``, ``grad_norm``."""
    seen: dict[str, None] = {}
    for run in runs:
        for record in run.metrics:
            for key, value in record.items():
                if key not in _NOT_CURVES and isinstance(value, int | float) and not isinstance(value, bool):
                    seen.setdefault(key, None)

    def order(key: str) -> tuple[int, str, int]:
        if key == "loss":
            return (0, "", 0)
        if "/" in key:
            objective, _, metric = key.rpartition("/")
            return (1, objective, 0 if metric == "loss" else 1)
        return (2 if key == "lr" else 3, key, 0)

    return sorted(seen, key=order)


def training_figure(runs: Sequence[RunRecord]) -> Figure | None:
    """Loss per objective, their metrics, the learning rate and gradient norm over steps; one line per run.

    A held-out value the evaluation measured under the same key is a star at the last step;
    resumes are dotted vertical lines, skipped steps red crosses along the bottom.
    """
    keys = curve_keys(runs)
    if not keys:
        return None
    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    figure = Figure(figsize=(4.6 * columns, 3.1 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis, key in zip(axes, keys, strict=False):
        for index, run in enumerate(runs):
            _draw_curve(axis, run, key, f"C{index}", label=run.name if len(runs) > 1 else None)
        axis.set_title(key, fontsize=10)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if key == "lr":
            axis.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        handles, _ = axis.get_legend_handles_labels()
        if handles:
            axis.legend(fontsize=7)
    for axis in axes[len(keys) :]:
        axis.set_visible(False)
    return figure


def _draw_curve(axis: Any, run: RunRecord, key: str, colour: str, label: str | None) -> None:
    points = [(r["step"], r[key]) for r in run.metrics if isinstance(r.get(key), int | float)]
    steps = np.array([p[0] for p in points], dtype=float)
    values = np.array([p[1] for p in points], dtype=float)
    if len(points):
        axis.plot(steps, np.where(np.isfinite(values), values, np.nan), color=colour, lw=1.3, label=label)
    bottom = blended_transform_factory(axis.transData, axis.transAxes)
    skipped = sorted(
        set(skipped_steps(run)) | {int(s) for s, v in zip(steps, values, strict=True) if not math.isfinite(v)}
    )
    if skipped and key != "lr":
        axis.plot(skipped, [0.03] * len(skipped), "x", color="red", transform=bottom, label="skipped step")
    for position, step in enumerate(resume_steps(run)):
        axis.axvline(step, color=colour, ls=":", lw=1, label="resumed" if position == 0 else None)
    held_out = held_out_value(run, key)
    if held_out is not None and len(points):
        axis.plot([steps.max()], [held_out], "*", color=colour, ms=11, mec="black", label="held-out")


def resume_steps(run: RunRecord) -> list[int]:
    """Steps a run was resumed at (``events.jsonl``)."""
    return [int(e["step"]) for e in run.events if e.get("event") == "resumed"]


def skipped_steps(run: RunRecord) -> list[int]:
    """Steps skipped for a non-finite value, leaving out those a later resume went back over and redid."""
    skipped: list[int] = []
    for event in run.events:
        if event.get("event") == "resumed":
            skipped = [step for step in skipped if step <= event["step"]]
        elif event.get("event") == "skipped_step":
            skipped.append(int(event["step"]))
    return skipped


def held_out_value(run: RunRecord, key: str) -> float | None:
    """The trained encoder's held-out metric under ``key`` (``simclr/loss``) in evaluation.json, if any."""
    value = run.evaluations.get("", {}).get("trained", {}).get(key)
    return float(value) if isinstance(value, int | float) and "/" in key else None


def few_shot_curves(scores: dict[str, Any]) -> dict[str, tuple[list[int], list[float], list[float]]]:
    """``{prefix: (shots, means, stds)}`` from one candidate's scores, shots ascending."""
    curves: dict[str, list[tuple[int, float, float]]] = {}
    for key, value in scores.items():
        match = FEW_SHOT.match(key)
        if match and isinstance(value, int | float):
            std = scores.get(key.replace("_accuracy", "_std"), 0.0)
            curves.setdefault(match.group("prefix") or "", []).append((int(match.group("shots")), value, std))
    return {
        prefix: ([p[0] for p in points], [p[1] for p in points], [p[2] for p in points])
        for prefix, points in ((prefix, sorted(points)) for prefix, points in curves.items())
    }


def few_shot_figure(runs: Sequence[RunRecord], evaluation_name: str) -> Figure | None:
    """Few-shot accuracy against labels per class (mean and std over draws), per candidate and run."""
    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    axis = figure.subplots()
    drawn = False
    for run_index, run in enumerate(runs):
        evaluation = run.evaluations.get(evaluation_name, {})
        for colour, candidate in enumerate(CANDIDATES):
            for prefix, (shots, means, stds) in few_shot_curves(evaluation.get(candidate) or {}).items():
                label = " ".join(p for p in (CANDIDATE_NAMES[candidate], prefix) if p)
                if len(runs) > 1:
                    label = f"{run.name}: {label}"
                style = _RUN_STYLES[run_index % len(_RUN_STYLES)]
                axis.errorbar(shots, means, yerr=stds, color=f"C{colour}", ls=style, marker="o", capsize=3, label=label)
                drawn = True
    if not drawn:
        return None
    axis.set_xscale("log")
    all_shots = sorted({int(x) for line in axis.lines for x in line.get_xdata()})
    axis.set_xticks(all_shots, [str(k) for k in all_shots])
    axis.minorticks_off()
    axis.set_xlabel("labeled samples per class")
    axis.set_ylabel("probe-test accuracy")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=7)
    return figure


def label_colours(labels: np.ndarray, classes: int) -> np.ndarray:
    """RGBA ``[N, 4]`` per label: tab10 up to 10 classes, tab20 up to 20, else a continuous map."""
    import matplotlib as mpl

    name = "tab10" if classes <= 10 else "tab20" if classes <= 20 else "turbo"
    colourmap = mpl.colormaps[name]
    if name == "turbo":
        return colourmap(labels / max(classes - 1, 1))
    return colourmap(labels % colourmap.N)


def pca_2d(features: np.ndarray) -> np.ndarray:
    """The first two principal components ``[N, 2]`` of ``[N, F]`` features (SVD of the centred data)."""
    centred = features - features.mean(axis=0, keepdims=True)
    _, _, directions = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ directions[:2].T
    return projected if projected.shape[1] == 2 else np.pad(projected, ((0, 0), (0, 2 - projected.shape[1])))


def tsne_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """A t-SNE map ``[N, 2]`` (scikit-learn), after PCA to at most 50 dimensions."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = float(min(30, max(2, (features.shape[0] - 1) // 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", max_iter=500, random_state=seed, n_jobs=1)
    # One thread for BLAS and OpenMP: on a busy machine their spinning threads made these small
    # problems ten times slower, not faster. Limited here, after scikit-learn (and SciPy's own
    # BLAS) is imported: a limit set before a runtime loads does not reach that runtime.
    with threadpool_limits(limits=1):
        reduced = features
        if features.shape[1] > 50 and features.shape[0] > 50:
            reduced = PCA(n_components=50, random_state=seed).fit_transform(features)
        return tsne.fit_transform(reduced)


def embedding_figure(sample: EmbeddingSample, tsne: bool = True) -> Figure:
    """PCA (and t-SNE) maps of each candidate's probe-test features, side by side, coloured by label."""
    keys = sorted(
        sample.features, key=lambda k: (CANDIDATES.index(k.split(":")[0]) if k.split(":")[0] in CANDIDATES else 9, k)
    )
    methods = ["PCA"] + (["t-SNE"] if tsne and len(sample.labels) >= 10 else [])
    classes = int(max(len(sample.class_names), sample.labels.max(initial=0) + 1))
    figure = Figure(figsize=(3.6 * len(keys), 3.4 * len(methods) + 0.6), layout="constrained")
    axes = figure.subplots(len(methods), len(keys), squeeze=False)
    rows = _tsne_rows(len(sample.labels))
    for column, key in enumerate(keys):
        features = sample.features[key]
        for row, method in enumerate(methods):
            axis = axes[row][column]
            chosen = np.arange(len(sample.labels)) if method == "PCA" else rows
            points = pca_2d(features) if method == "PCA" else tsne_2d(features[rows])
            axis.scatter(points[:, 0], points[:, 1], s=6, c=label_colours(sample.labels[chosen], classes), linewidths=0)
            candidate, _, part = key.partition(":")
            axis.set_title(
                f"{CANDIDATE_NAMES.get(candidate, candidate)} {part} ({method})".replace("  ", " "), fontsize=10
            )
            axis.set_xticks([])
            axis.set_yticks([])
    _class_legend(figure, sample, classes)
    return figure


def _tsne_rows(count: int) -> np.ndarray:
    if count <= TSNE_MAX_POINTS:
        return np.arange(count)
    return np.sort(np.random.default_rng(0).choice(count, TSNE_MAX_POINTS, replace=False))


def _class_legend(figure: Figure, sample: EmbeddingSample, classes: int) -> None:
    from matplotlib.lines import Line2D

    if classes > 20:
        return
    names = [sample.class_names[i] if i < len(sample.class_names) else str(i) for i in range(classes)]
    colours = label_colours(np.arange(classes), classes)
    handles = [Line2D([], [], ls="", marker="o", color=colours[i], label=names[i]) for i in range(classes)]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(classes, 10), fontsize=8, frameon=False)
