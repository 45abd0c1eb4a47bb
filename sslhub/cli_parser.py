"""The grammar of the ``sslhub`` command: one function per group of sub-commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _add_plugin_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p",
        dest="plugins",
        action="append",
        default=[],
        metavar="MODULE",
        help="load MODULE as a plugin, or block one with no:NAME (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sslhub", description="Self-supervised pretraining from recipes.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _training_commands,
        _catalog_commands,
        _evaluate_command,
        _finetune_command,
        _export_command,
        _deployment_commands,
        _authoring_commands,
    ):
        add(commands)
    return parser


def _training_commands(commands: Any) -> None:
    """``run`` and ``validate``: a recipe in."""
    run = commands.add_parser("run", help="train a recipe, evaluate it and export it")
    run.add_argument("recipe", type=Path)
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, e.g. --set train.steps=50 (repeatable)",
    )
    _add_plugin_options(run)
    run.add_argument("--out", type=Path, help="run directory (default: runs/NAME-TIMESTAMP)")
    run.add_argument("--resume", metavar="RUN_DIR|auto", help="continue a run from its newest good checkpoint")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="build everything, time a first and 3 warm steps, report sizes; keeps nothing",
    )
    run.add_argument("--progress", choices=["auto", "on", "off"], default="auto")

    validate = commands.add_parser("validate", help="check a recipe without building anything")
    validate.add_argument("recipe", type=Path)
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    validate.add_argument("--explain", action="store_true", help="show which code and plugin serve each component")
    _add_plugin_options(validate)


def _catalog_commands(commands: Any) -> None:
    """``plugins`` and ``list``: what is installed."""
    plugins = commands.add_parser("plugins", help="list plugins, their hooks, components and load errors")
    plugins.add_argument("--json", action="store_true")
    _add_plugin_options(plugins)

    listing = commands.add_parser("list", help="list components with their parameters")
    listing.add_argument("kind", nargs="?", help="modalities, augmentations, encoders or objectives")
    listing.add_argument(
        "pattern", nargs="?", default="*", help="wildcard pattern, e.g. 'random_*'; without a wildcard, a substring"
    )
    _add_plugin_options(listing)


def _add_labeled_data_options(parser: argparse.ArgumentParser, data_help: str) -> None:
    """``--data`` and how to read and split it: the same for ``evaluate`` and ``finetune``."""
    parser.add_argument("--data", metavar="SOURCE", help=data_help)
    parser.add_argument(
        "--group",
        metavar="PATTERN|FIELD",
        help="keep groups apart: a path regex (folders), a field (JSONL), a column (CSV)",
    )
    parser.add_argument(
        "--label", metavar="FIELD", help="label field (JSONL, default label) or column (CSV, default label)"
    )
    parser.add_argument("--test-fraction", type=float, default=0.3, help="share of each class on the test side")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the train / test split")


def _evaluate_command(commands: Any) -> None:
    """``evaluate``: a finished run, on its own split or another labeled set."""
    evaluate = commands.add_parser(
        "evaluate", help="re-run the evaluation of a finished run, or on another labeled set"
    )
    evaluate.add_argument("run_dir", type=Path)
    _add_labeled_data_options(
        evaluate,
        "evaluate on this labeled set instead: a folder, .csv, .jsonl or .npz path (typed by the modality), "
        "or a YAML mapping shaped like data.source; writes evaluation-NAME.json",
    )
    evaluate.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="evaluate.KEY=VALUE",
        help="override an evaluation option, e.g. --set evaluate.few_shot.draws=30 (repeatable; "
        "writes evaluation-NAME.json, so --name is needed without --data)",
    )
    evaluate.add_argument(
        "--name", help="NAME in evaluation-NAME.json (default with --data: the source's file or folder name)"
    )
    _add_plugin_options(evaluate)


def _finetune_command(commands: Any) -> None:
    """``finetune``: a finished run's encoder with a classification head."""
    finetune = commands.add_parser(
        "finetune", help="fine-tune a run's encoder with a classification head on labeled data"
    )
    finetune.add_argument("run_dir", type=Path)
    _add_labeled_data_options(
        finetune, "labeled data instead of the run's own labeled split (the same forms as for evaluate)"
    )
    finetune.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="finetune.KEY=VALUE",
        help="override a finetune option, e.g. --set finetune.shots=5 (repeatable)",
    )
    finetune.add_argument("--encoder", metavar="KEY", help="which encoder of a run with several")
    finetune.add_argument("--name", help="NAME of RUN_DIR/finetune/NAME (default: default, or the --data name)")
    finetune.add_argument("--resume", action="store_true", help="continue fine-tune NAME from its last checkpoint")
    _add_plugin_options(finetune)


def _export_command(commands: Any) -> None:
    """``export``: ONNX, safetensors and native formats of a finished run."""
    export = commands.add_parser(
        "export", help="export a run's encoder to verified ONNX, safetensors and its library's own format"
    )
    export.add_argument("run_dir", type=Path)
    export.add_argument(
        "--format",
        dest="formats",
        default="onnx",
        metavar="FORMATS",
        help="comma list of onnx, safetensors (encoder.safetensors, for sslhub.load_encoder) and native "
        "(timm / transformers / torchaudio weights in native/); default: onnx",
    )
    export.add_argument("--out", type=Path, help="output directory (default: RUN_DIR/onnx)")
    export.add_argument("--opset", type=int)
    export.add_argument("--allow-mismatch", action="store_true", help="write the file even if verification fails")
    export.add_argument(
        "--include-head",
        metavar="OBJECTIVE.HEAD",
        help="export head(pooled) instead of the pooled embedding, e.g. simclr.projection",
    )
    _add_plugin_options(export)


def _deployment_commands(commands: Any) -> None:
    """``embed``, ``predict`` and ``report``: using what a run produced."""
    embed = commands.add_parser("embed", help="embed files with an exported model through onnxruntime")
    embed.add_argument("model", type=Path, metavar="MODEL_DIR_OR_RUN_DIR")
    embed.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="files or folders to embed")
    embed.add_argument("--out", type=Path, default=Path("embeddings.npy"), help="output .npy (default: embeddings.npy)")
    embed.add_argument("--encoder", metavar="KEY", help="which encoder of a run with several")
    embed.add_argument("--text-field", default="text", help="the text key of .jsonl inputs (default: text)")
    embed.add_argument("--batch-size", type=int, default=64)
    embed.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores)")

    predict = commands.add_parser("predict", help="classify files with an exported classifier through onnxruntime")
    predict.add_argument(
        "model", type=Path, metavar="MODEL_DIR", help="folder of classifier.onnx, or a fine-tune folder"
    )
    predict.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="files or folders to classify")
    predict.add_argument(
        "--out", type=Path, default=Path("predictions.csv"), help="output .csv or .jsonl (default: predictions.csv)"
    )
    predict.add_argument("--text-field", default="text", help="the text key of .jsonl inputs (default: text)")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores)")

    report = commands.add_parser(
        "report", help="write one self-contained HTML report of a run, or of several side by side"
    )
    report.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    report.add_argument(
        "--out", type=Path, help="the HTML file (default: RUN_DIR/report.html for one run, ./report.html for several)"
    )


def _authoring_commands(commands: Any) -> None:
    """``new-plugin`` and ``recipe schema``: writing plugins and recipes."""
    new_plugin = commands.add_parser("new-plugin", help="create a plugin package to start from (installable, tested)")
    new_plugin.add_argument("name", help="snake_case plugin name, e.g. my_method")
    new_plugin.add_argument(
        "--directory", "--dir", type=Path, help="project directory to create (default: ./sslhub-NAME)"
    )

    recipe = commands.add_parser("recipe", help="recipe tools")
    recipe_commands = recipe.add_subparsers(dest="recipe_command", required=True)
    schema = recipe_commands.add_parser("schema", help="print the JSON Schema of recipes for the installed plugins")
    _add_plugin_options(schema)
