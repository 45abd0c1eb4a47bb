"""Run the shipped recipes on the real-data sets and write the table.

    python benchmarks/realdata/run.py --data DIR [--recipes a,b] [--steps-scale X] [--seeds 0,1,2] [--out RESULTS]

For each recipe in ``recipes/`` and each set in DIR (built by ``build.py``) of the recipe's
modality (the tabular recipes have two tables), runs ``sslhub run RECIPE`` with the training
data pointed at the set's pretrain side and
``evaluate.data`` at its labeled side, split by unseen groups, then reads the run's
``evaluation.json`` and writes ``results.md`` and ``results.json`` (5-shot and full-label
probes of the trained encoder, the random-init encoder and the raw input, the 5-shot lead over
both baselines in points, and whether issue 20's figure is met).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import Row, as_json, machine_info, markdown, mean_over_seeds, row_from_evaluation  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"

#: share of the labeled side's groups the evaluation keeps for the probe's test side.
TEST_FRACTION = 0.3

#: key names of the grouping options of a labeled source (docs/recipes.md, `evaluate.data`).
GROUP_PATTERN_KEY = "group_pattern"
GROUP_FIELD_KEY = "group_field"

#: the encoder whose probes a modality's row reports, where a recipe has several. image_text: the
#: image encoder, which embeds the images alone (a caption names its icon, so the text encoder's
#: probe would read the answer from the words).
REPORTED_ENCODER = {"image_text": "image"}


def recipe_modality(path: Path) -> str | None:
    """``data.modality`` of a recipe file, or None when it has none."""
    recipe = yaml.safe_load(path.read_text())
    return (recipe.get("data") or {}).get("modality")


def recipe_train(path: Path) -> dict:
    """The ``train`` section of a recipe file (empty when it has none)."""
    return (yaml.safe_load(path.read_text()) or {}).get("train") or {}


def recipe_steps(path: Path) -> int | None:
    return recipe_train(path).get("steps")


def scaled_budget(train: dict, scale: float) -> dict[str, float]:
    """The ``train.steps`` or ``train.epochs`` override that scales a recipe's ``train`` budget (none at 1)."""
    if scale == 1.0:
        return {}
    if train.get("epochs") is not None:
        return {"train.epochs": train["epochs"] * scale}
    return {"train.steps": max(1, round(train.get("steps", 100) * scale))}


def steps_run(out: Path) -> int | None:
    """Optimizer steps a finished run took (its ``summary.json``; else its recipe record's steps)."""
    summary = out / "summary.json"
    if summary.is_file():
        return json.loads(summary.read_text()).get("steps")
    record = out / "recipe.yaml"  # a --set train.steps=N counts
    return recipe_steps(record) if record.is_file() else None


def sets_for(modality: str, sets: dict[str, dict]) -> list[str]:
    """The sets a recipe of ``modality`` runs on: those of its modality (an entry's ``modality``, else
    the set's name: audio, image, text) and those whose entry lists it under ``also_for`` (the emoji
    pairs' pictures, which an image recipe reads without their captions)."""
    return [
        name
        for name, entry in sets.items()
        if entry.get("modality", name) == modality or modality in entry.get("also_for", ())
    ]


def sources(modality: str, folder: Path, entry: dict) -> tuple[dict, dict] | None:
    """(``data.source``, ``evaluate.data``) for a modality's set in ``folder``, or None for no set.

    The grouping option sits in the labeled source (``group_pattern`` for folders,
    ``group_field`` for JSONL text); tables have no groups, so their split is stratified random.
    """
    if modality in ("audio", "image", "image_text"):  # image_text: a caption file beside each image
        pretrain = {"type": "folder", "path": str(folder / "pretrain")}
        labeled = {"type": "folder", "path": str(folder / "labeled"), GROUP_PATTERN_KEY: entry["group_pattern"]}
    elif modality == "text":
        pretrain = {"type": "files", "path": str(folder / "pretrain.jsonl")}
        labeled = {
            "type": "files",
            "path": str(folder / "labeled.jsonl"),
            "label_field": entry["label_field"],
            GROUP_FIELD_KEY: entry["group_field"],
        }
    elif modality == "tabular":
        column = entry["label_column"]
        pretrain = {"type": "csv", "path": str(folder / "pretrain.csv"), "label_column": column}
        labeled = {"type": "csv", "path": str(folder / "labeled.csv"), "label_column": column}
    else:
        return None
    return pretrain, {"source": labeled, "test_fraction": TEST_FRACTION}


def command(
    recipe: Path, pretrain: dict, evaluation: dict, out: Path, budget: dict[str, float], extra: list[str]
) -> list[str]:
    """The ``sslhub run`` command line (values are JSON, which the ``--set`` YAML parser reads)."""
    args = [sys.executable, "-m", "sslhub", "run", str(recipe), "--out", str(out)]
    # The table reports 5-shot probes; larger k would only cost time (and need more labels per class).
    # 30 draws: the recipes' 5 move a 5-shot mean by about 2 points, 30 settle it to about 1, for seconds.
    sets = {"data.source": pretrain, "evaluate.data": evaluation, "export": None}
    sets |= {"evaluate.few_shot.shots": [1, 5], "evaluate.few_shot.draws": 30}
    sets |= budget
    for key, value in sets.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    for item in extra:
        args += ["--set", item]
    return args


def last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-count:]) or "no output"


def launch(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run one ``sslhub`` command offline, output captured (tests replace this)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def run_name(recipe: Path, modality: str, set_name: str, seed: int | None) -> str:
    """A run's folder and log name: the recipe, plus ``@SET`` on a set whose name is not its
    modality's (a second table: ``autoencoder_tabular@tabular_diabetes``), plus ``-seedN``."""
    name = recipe.stem if set_name == modality else f"{recipe.stem}@{set_name}"
    return name if seed is None else f"{name}-seed{seed}"


def run_recipe(
    recipe: Path, modality: str, set_name: str, data: Path, entry: dict, args: argparse.Namespace, seed: int | None
) -> Row:
    """Train and evaluate one recipe on one set at ``seed`` (None: the recipe's); a failure becomes a row
    with ``error``."""
    pretrain, evaluation = sources(modality, data / set_name, entry)
    train = recipe_train(recipe)
    budget = scaled_budget(train, args.steps_scale)
    steps = budget.get("train.steps", train.get("steps"))
    name = run_name(recipe, modality, set_name, seed)
    out = args.out / "runs" / name
    extra = args.set if seed is None else [*args.set, f"seed={seed}"]
    started = time.perf_counter()
    try:
        done = launch(command(recipe, pretrain, evaluation, out, budget, extra), args.timeout)
    except subprocess.TimeoutExpired:
        return Row(
            recipe.stem, set_name, steps, time.perf_counter() - started, error=f"timed out after {args.timeout} s"
        )
    seconds = time.perf_counter() - started
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    (args.out / "logs" / f"{name}.log").write_text(done.stdout + done.stderr)
    return finished_row(recipe, modality, set_name, out, done, steps, seconds)


def finished_row(
    recipe: Path,
    modality: str,
    set_name: str,
    out: Path,
    done: subprocess.CompletedProcess,
    steps: int | None,
    seconds: float,
) -> Row:
    """The row of a run that ended: its scores, or why it has none."""
    evaluation_file = out / "evaluation.json"
    if done.returncode != 0 or not evaluation_file.is_file():
        error = f"exit {done.returncode}: {last_lines(done.stderr or done.stdout)}"
        return Row(recipe.stem, set_name, steps, seconds, error=error)
    ran = steps_run(out)
    steps = ran if ran is not None else steps
    evaluation = json.loads(evaluation_file.read_text())
    return row_from_evaluation(recipe.stem, set_name, evaluation, steps, seconds, REPORTED_ENCODER.get(modality))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder written by build.py")
    parser.add_argument(
        "--recipes", default="", help="comma-separated recipe names (file stems); default all with a set"
    )
    parser.add_argument(
        "--steps-scale", type=float, default=1.0, help="multiply each recipe's train.steps (or train.epochs)"
    )
    parser.add_argument(
        "--seeds",
        type=_seed_list,
        default=[],
        help="comma-separated seeds: each recipe runs once per seed and its row is the mean (default: the recipe's)",
    )
    parser.add_argument("--out", type=Path, default=None, help="results folder (default DATA/results)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per recipe before it counts as failed")
    parser.add_argument("--set", action="append", default=[], help="extra KEY=VALUE override for every run")
    args = parser.parse_args(argv)
    args.out = args.out or args.data / "results"
    return args


def _seed_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def run_at_seeds(recipe: Path, modality: str, set_name: str, data: Path, entry: dict, args: argparse.Namespace) -> Row:
    """One recipe on one set: a single run at the recipe's seed, or the mean of a run per ``--seeds``."""
    if not args.seeds:
        return run_recipe(recipe, modality, set_name, data, entry, args, None)
    runs = {seed: run_recipe(recipe, modality, set_name, data, entry, args, seed) for seed in args.seeds}
    return mean_over_seeds(runs)


def selected_recipes(names: str) -> list[Path]:
    available = {p.stem: p for p in sorted(RECIPES.glob("*.yaml"))}
    wanted = [n.strip().removesuffix(".yaml") for n in names.split(",") if n.strip()] or list(available)
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise SystemExit(f"unknown recipe(s) {', '.join(unknown)}; shipped: {', '.join(available)}")
    return [available[n] for n in wanted]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    manifest_file = args.data / "manifest.json"
    if not manifest_file.is_file():
        raise SystemExit(
            f"{manifest_file} not found: build the sets first with python benchmarks/realdata/build.py --out {args.data}"
        )
    sets = json.loads(manifest_file.read_text())["sets"]
    rows = []
    for recipe in selected_recipes(args.recipes):
        modality = recipe_modality(recipe)
        names = sets_for(modality, sets)
        if not names:
            print(f"{recipe.stem}: skipped (no real-data set for modality {modality!r})")
        for name in names:
            print(f"{recipe.stem}: running on the {name} set ...", flush=True)
            rows.append(run_at_seeds(recipe, modality, name, args.data, sets[name], args))
            print(f"  {rows[-1].error or rows[-1].scores}", flush=True)
    settings = {"steps scale": args.steps_scale, "probe test fraction": TEST_FRACTION, "data": str(args.data)}
    if args.seeds:
        settings["seeds"] = ", ".join(map(str, args.seeds))
    machine = machine_info()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(markdown(rows, machine, settings))
    (args.out / "results.json").write_text(json.dumps(as_json(rows, machine, settings), indent=2) + "\n")
    print(markdown(rows, machine, settings))
    return 1 if any(row.error for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
