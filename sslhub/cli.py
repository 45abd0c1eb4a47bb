"""The ``sslhub`` command (also ``python -m sslhub``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslhub import verdict_words
from sslhub.blame import missing_extra_hint, raised_in
from sslhub.cli_parser import build_parser
from sslhub.errors import SSLHubError, Terminated

if TYPE_CHECKING:
    from sslhub.catalog import PluginRecord
    from sslhub.engine import Run, TrainedModel

log = logging.getLogger("sslhub")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Other libraries (the ONNX exporter, transformers) stay at WARNING; sslhub speaks at INFO.
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("sslhub").setLevel(logging.DEBUG if args.debug else logging.INFO)
    previous_sigterm = _report_sigterm()
    try:
        return COMMANDS[args.command](args)
    except SSLHubError as exc:
        if args.debug:
            traceback.print_exc()
            if getattr(exc, "details", ""):
                print(exc.details, file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError as exc:
        return _end_on_broken_pipe(exc, args.debug)
    except Terminated as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a message, not a traceback
        _report_unexpected(exc, args.debug)
        return 1
    finally:
        _leave_distributed()
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _report_unexpected(exc: Exception, debug: bool) -> None:
    """An error sslhub did not foresee: the traceback with ``--debug``, else one line and where it was raised."""
    if debug:
        traceback.print_exc()
        return
    where = raised_in(exc)
    origin = f"\n  raised in {where}{missing_extra_hint(exc)}" if where else ""
    print(f"error: {type(exc).__name__}: {exc}{origin}\n(run again with --debug to see the traceback)", file=sys.stderr)


def _end_on_broken_pipe(exc: BrokenPipeError, debug: bool) -> int:
    """Whoever read stdout stopped (`sslhub plugins | head`): end quietly with SIGPIPE's status, as Unix
    tools do. Any other broken pipe (a worker's, a socket's) is an error like the rest."""
    if not _stdout_reader_gone():
        _report_unexpected(exc, debug)
        return 1
    # what is left of stdout goes to the null device, so that the flush at exit does not fail again
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end is closed (poll reports an error on its writing end)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):  # not a real file (captured output) or already closed
        return False


def _leave_distributed() -> None:
    """Destroy the torchrun process group before exit, as torch asks.

    Left to interpreter shutdown, gloo's communication threads can be torn down mid-flight and a
    rank aborts (``terminate called without an active exception``) after a successful command.
    Only a command that joined a group imported ``torch.distributed``; torch-free commands stay so.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    try:
        dist.destroy_process_group()
    except Exception as exc:  # noqa: BLE001 - leaving must not hide the command's own outcome
        logging.getLogger("sslhub").debug("destroying the process group failed: %s", exc)


def _report_sigterm() -> Any:
    """Make SIGTERM outside the training loop a :class:`Terminated` error (a message, exit 143).

    Python's default is to die without a word. The training loop installs its own handler (save,
    then stop) and restores this one after. Returns the previous handler (``None`` off the main
    thread, where handlers cannot be set).
    """
    if threading.current_thread() is not threading.main_thread() or os.environ.get("SSLHUB_NO_SIGNAL_HANDLERS"):
        return None

    def terminated(signum: int, frame: Any) -> None:
        raise Terminated()

    return signal.signal(signal.SIGTERM, terminated)


# -- shared steps -----------------------------------------------------------------


def load_catalog(plugins: list[str]):
    from sslhub.catalog import Catalog, PluginError

    try:
        catalog = Catalog.load(plugins)
    except PluginError as exc:
        raise SSLHubError(str(exc)) from None
    for problem in catalog.problems():
        log.warning("%s", problem)
    return catalog


def load_and_resolve(recipe_path: Path, overrides: list[str], plugins: list[str], saved: bool = False):
    """Load, override and resolve a recipe; ``saved``: it is a run directory's ``recipe.yaml``."""
    from sslhub.recipe import forget_unused_optimizer_options, resolve_recipe
    from sslhub.recipe_yaml import apply_override, load_recipe_file

    source = load_recipe_file(recipe_path)
    if saved:
        forget_unused_optimizer_options(source.data)
    for assignment in overrides:
        apply_override(source, assignment)
    return resolve_recipe(source, load_catalog(plugins))


# -- commands ---------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from sslhub.checkpoint import CheckpointStore
    from sslhub.distributed import init_distributed
    from sslhub.engine import Run

    recipe = load_and_resolve(args.recipe, args.overrides, args.plugins)
    init_distributed(recipe.train.device)
    resume = False
    if args.resume:
        resume = True
        run_dir = _find_resume_dir(args.resume, args.out, recipe.model.name)
        saved = run_dir / "recipe.yaml"
        if saved.exists():
            # The run continues with the recipe it was trained with (every default and earlier
            # --set included); --set given now still applies on top, e.g. more train.steps.
            recipe = resolve_saved_recipe(saved, args.overrides, run_dir, args.plugins)
    else:
        run_dir = args.out or Path("runs") / f"{recipe.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if CheckpointStore(run_dir / "checkpoints").holds_checkpoints() and not args.dry_run:
            raise SSLHubError(
                f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick another --out"
            )
    show = {"auto": None, "on": True, "off": False}[args.progress]
    if args.dry_run:
        print(json.dumps(_dry_run(recipe, run_dir, resume, show), indent=2))
        return 0
    run = Run(recipe, run_dir, resume=resume, show_progress=show)
    summary = run.execute()
    if run.is_main:
        print(format_summary(recipe.model.name, run_dir, summary))
    return 0


def _dry_run(recipe, run_dir: Path, resume: bool, show: bool | None) -> dict[str, Any]:
    """A dry run builds in a throw-away directory, so it leaves nothing behind (unless it resumes a run)."""
    import tempfile

    from sslhub.engine import Run

    if resume:
        return Run(recipe, run_dir, resume=True, show_progress=show).execute(dry_run=True)
    with tempfile.TemporaryDirectory(prefix="sslhub-dry-run-") as scratch:
        report = Run(recipe, Path(scratch) / run_dir.name, show_progress=show).execute(dry_run=True)
    report["run_directory"] = "none (a dry run keeps nothing)"
    return report


def _find_resume_dir(resume: str, out: Path | None, name: str) -> Path:
    if resume != "auto":
        run_dir = Path(resume)
        if not run_dir.is_dir():
            raise SSLHubError(f"--resume {resume}: no such run directory")
        return run_dir
    if out is not None:
        return out
    candidates = sorted(Path("runs").glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)
    candidates = [c for c in candidates if (c / "checkpoints" / "manifest.json").exists()]
    if not candidates:
        raise SSLHubError(f"--resume auto: no earlier run of '{name}' with checkpoints under runs/")
    return candidates[-1]


def format_summary(name: str, run_dir: Path, summary: dict[str, Any]) -> str:
    """The end-of-run text: steps and loss, the evaluation table and verdict, the export."""
    lines = [
        f"run '{name}' finished: {summary['steps']} steps in {summary['train_seconds']} s, "
        f"final loss {summary.get('final_loss')}",
        f"run directory: {run_dir}",
    ]
    if summary.get("random_init"):
        lines.append(f"random-init baseline run: {summary.get('note')}")
    if summary.get("early_stopping"):
        lines.append(format_early_stopping(summary["early_stopping"]))
    lines += format_evaluation(summary.get("evaluation") or {})
    for result in (summary.get("export") or {}).values():
        relative = f", rel {result['max_rel_diff']:.2e}" if "max_rel_diff" in result else ""
        lines.append(f"ONNX: {result['path']} (max abs diff {result['max_abs_diff']:.2e}{relative})")
    return "\n".join(lines)


def format_early_stopping(result: dict[str, Any]) -> str:
    """One sentence: whether and why training stopped early, the best validation, and which weights the run kept."""
    monitor = f"val_{result['monitor']}".replace("val_val_", "val_")
    if result["best_step"] is None:
        return f"early stopping: no validation ran in {result['step']} steps; the run keeps its last weights"
    best = f"best {monitor} {result['best_value']:.6g} at step {result['best_step']}"
    if result["stopped_early"]:
        head = (
            f"early stopping: stopped at step {result['step']} of {result['total_steps']} ({result['reason']}); {best}"
        )
    else:
        head = f"early stopping: trained all {result['step']} steps without stopping; {best}"
    kept = "the best weights" if result["restored_best"] else "the last weights"
    return f"{head}; evaluation and export use {kept}"


#: the evaluation report's candidates, as the summary table's columns.
SUMMARY_COLUMNS = {"trained": "trained", "random_init": "random init", "raw_input": "raw input"}


def format_evaluation(evaluation: dict[str, Any]) -> list[str]:
    """Trained / random init / raw input side by side, then what training failed to beat, then notes.

    Few-shot rows show ``mean±std`` over the draws; a cell a candidate lacks shows ``-``.
    """
    trained = evaluation.get("trained", {})
    if not trained:
        return [f"note: {note}" for note in evaluation.get("notes", [])]
    columns = [label for label in SUMMARY_COLUMNS if evaluation.get(label)]
    lines = [f"{'metric':<32}" + "".join(f" {SUMMARY_COLUMNS[label]:>16}" for label in columns)]
    for key in trained:
        if key.endswith("_std"):
            continue
        cells = [_summary_cell(evaluation.get(label, {}), key) for label in columns]
        lines.append(f"{key:<32}" + "".join(f" {cell:>16}" for cell in cells))
    lines += _verdict_lines(evaluation.get("verdict", []))
    lines += [f"note: {note}" for note in evaluation.get("notes", [])]
    return lines


def _verdict_lines(verdict: list[str]) -> list[str]:
    """Every comparison the trained encoder loses, as a warning; else one line saying it wins them
    all, followed by the wins smaller than the spread of the few-shot draws (they may be luck)."""
    failures = [line for line in verdict if verdict_words.is_loss(line)]
    if failures or not verdict:
        return [f"WARNING: {line}" for line in failures]
    narrow = verdict_words.narrow_wins(verdict)
    among = verdict_words.narrow_wins_clause(len(narrow))
    return [f"trained beats every baseline on all {len(verdict)} probe comparisons{among}", *(f"  {n}" for n in narrow)]


def _summary_cell(scores: dict[str, Any], key: str) -> str:
    # A raw input feeding several encoders alike is scored once, unprefixed (see sslhub.evaluation.baseline_score).
    if key not in scores:
        key = key.rsplit("/", 1)[-1]
    value = scores.get(key)
    if value is None:
        return "-"
    if not isinstance(value, int | float):
        return str(value)
    std = scores.get(key.replace("_accuracy", "_std")) if "few_shot_" in key else None
    return f"{value:.4f}" if std is None else f"{value:.4f}±{std:.4f}"


def _wildcard(pattern: str) -> str:
    """``frame`` finds ``frame_transformer``: a pattern without ``*?[`` matches as a substring."""
    return pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"


def cmd_validate(args: argparse.Namespace) -> int:
    recipe = load_and_resolve(args.recipe, args.overrides, args.plugins)
    print(f"{args.recipe}: valid recipe '{recipe.model.name}'")
    if args.explain:
        rows = [("data", recipe.modality)] + [(a.path, a) for a in recipe.augmentations]
        rows += [(e.path, e) for e in recipe.encoders.values()] + [(o.path, o) for o in recipe.objectives]
        for path, resolved in rows:
            component = resolved.component
            print(f"  {path:<16} {component.kind} '{component.name}' -> {component.qualname} [{component.provider}]")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from sslhub.catalog import Catalog, strict_from_env

    catalog = Catalog.load(args.plugins, strict=False)
    records = catalog.plugins
    # Strict mode exists for CI: there a plugin that failed to load must fail the command.
    # A plugin named with -p must load in any mode.
    explicit = catalog.explicit_problems()
    failed = 1 if explicit or (strict_from_env() and any(r.errors for r in records)) else 0
    for problem in explicit:
        print(f"error: {problem}", file=sys.stderr)
    if args.json:
        print(json.dumps([r.as_dict() for r in records], indent=2))
        return failed
    print("versions: " + ", ".join(f"{name} {version}" for name, version in library_versions().items()))
    if not records:
        print("no plugins installed")
    for record in records:
        print_plugin_record(record)
    print_file_decoders([spec[3:] for spec in args.plugins if spec.startswith("no:")])
    if failed and not explicit:
        print("error: a plugin failed to load and SSLHUB_STRICT_PLUGINS is on", file=sys.stderr)
    return failed


def print_plugin_record(record: PluginRecord) -> None:
    """One plugin of ``sslhub plugins``: its status, version and source, then its hooks, components and problems."""
    status = "blocked" if record.blocked else ("ERROR" if record.errors else "ok")
    version = f" {record.distribution} {record.version}" if record.distribution else ""
    print(f"{record.name} [{status}]{version} ({record.source}: {record.module})")
    if record.hooks:
        print(f"  hooks: {', '.join(record.hooks)}")
    if record.components:
        print(f"  components: {', '.join(f'{c.kind}:{c.name}' for c in record.components)}")
    for error in record.errors:
        print(f"  error: {error}")
    for warning in record.warnings:
        print(f"  warning: {warning}")


def print_file_decoders(blocked: list[str]) -> None:
    """The ``sslhub.files`` decoders that ``embed``/``predict`` read files with (a torch-free entry-point group)."""
    from sslhub.files import installed_decoders

    decoders = installed_decoders(strict=False, blocked=blocked)
    if not decoders:
        print(
            "file decoders: none usable (none installed, or their plugins are blocked): embed and predict read .npy/.npz only"
        )
        return
    print("file decoders (entry-point group sslhub.files):")
    for registered in decoders:
        decoder = registered.decoder
        extensions = ", ".join(decoder.extensions) or "no extensions"
        print(f"  {registered.name}: {decoder.kind or '?'} files ({extensions}), from {registered.distribution}")


#: the libraries whose versions decide whether an environment works; shown by ``sslhub plugins``.
REPORTED_LIBRARIES = ("sslhub", "torch", "torchvision", "torchaudio", "transformers", "timm", "onnxruntime", "onnx")


def library_versions() -> dict[str, str]:
    """Installed versions of :data:`REPORTED_LIBRARIES`, read from package metadata without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in REPORTED_LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def cmd_list(args: argparse.Namespace) -> int:
    from sslhub.registry import KIND_PLURALS, KINDS

    catalog = load_catalog(args.plugins)
    kinds = list(KINDS)
    if args.kind:
        lookup = {**{k: k for k in KINDS}, **{v: k for k, v in KIND_PLURALS.items()}}
        if args.kind not in lookup:
            raise SSLHubError(f"unknown kind '{args.kind}'; expected one of {', '.join(KIND_PLURALS.values())}")
        kinds = [lookup[args.kind]]
    for kind in kinds:
        registry = catalog.registry(kind)
        names = registry.names(_wildcard(args.pattern))
        print(f"{KIND_PLURALS[kind]}:" + ("" if names else " (none)"))
        for name in names:
            component = registry.get(name)
            print(f"  {name}  [{component.provider.plugin}]{_capabilities(component)}")
            if component.description:
                print(f"      {component.description}")
            for field_name, info in component.params.model_fields.items():
                default = (
                    "required" if info.is_required() else f"default {info.get_default(call_default_factory=True)!r}"
                )
                description = f"  {info.description}" if info.description else ""
                print(f"      {field_name}: {_type_name(info.annotation)} ({default}){description}")
    return 0


def _capabilities(component: Any) -> str:
    """`` modalities: audio  provides: pooled, tokens, causal`` (what validation matches objectives against)."""
    parts = []
    if component.modalities:
        parts.append(f"modalities: {', '.join(sorted(component.modalities))}")
    if component.kind == "encoder":
        parts.append(f"provides: {', '.join(sorted(component.provides))}")
    if component.requires:
        parts.append(f"requires: {', '.join(sorted(component.requires))}")
    return "".join(f" {part}" for part in parts)


def _type_name(annotation: Any) -> str:
    import typing

    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(repr(choice) for choice in typing.get_args(annotation))
    text = str(annotation) if typing.get_args(annotation) else getattr(annotation, "__name__", str(annotation))
    return text.replace("typing.", "").replace("NoneType", "None")


def recorded_plugin_args(run_dir: Path) -> list[str]:
    """The ``-p`` arguments a run was started with, from its environment.json (``[]`` if unreadable).

    A run directory is untrusted input (people share and download them): these are reported
    and ``no:`` blocks are applied, but a module named here is never imported.
    """
    try:
        environment = json.loads((Path(run_dir) / "environment.json").read_text())
        saved = environment.get("plugin_args") if isinstance(environment, dict) else None
    except (OSError, ValueError):
        return []
    return [a for a in saved if isinstance(a, str)] if isinstance(saved, list) else []


def recorded_plugin_origins(run_dir: Path) -> dict[str, str]:
    """``{-p argument: the file it was imported from}``, from the run's environment.json (never imported here)."""
    try:
        environment = json.loads((Path(run_dir) / "environment.json").read_text())
        plugins = environment.get("plugins") if isinstance(environment, dict) else None
    except (OSError, ValueError):
        return {}
    entries = plugins if isinstance(plugins, list) else []
    return {
        str(entry["module"]): str(entry["origin"])
        for entry in entries
        if isinstance(entry, dict) and entry.get("source") == "-p" and entry.get("origin") and entry.get("module")
    }


def _reload_argument(argument: str, origin: str) -> str:
    """What to pass to ``-p`` from any folder: the recorded file when it is a plain module that still exists."""
    path = Path(origin)
    if origin and path.name != "__init__.py" and path.is_file() and path.stem.isidentifier():
        return str(path)
    return argument


def _installed_plugin_names() -> set[str]:
    from importlib.metadata import entry_points

    from sslhub.catalog import ENTRY_POINT_GROUP

    found = entry_points(group=ENTRY_POINT_GROUP)
    return {e.name for e in found} | {e.dist.metadata["Name"] for e in found if getattr(e, "dist", None)}


def resolve_saved_recipe(recipe_file: Path, overrides: list[str], run_dir: Path, plugins: list[str]):
    """Resolve a run's saved recipe with the plugins installed and named now (``plugins``).

    The run's recorded ``no:`` blocks still apply (blocking imports nothing); its recorded
    ``-p`` modules are not imported: when the recipe needs them, the error names them and
    says how to load them (``-p MODULE``), and otherwise a warning does.
    """
    from sslhub.errors import RecipeError, RecipeIssue

    recorded = recorded_plugin_args(run_dir)
    installed = _installed_plugin_names()
    blocks = [a for a in recorded if a.startswith("no:") and a[3:] in installed and a not in plugins]
    missing = [a for a in dict.fromkeys(recorded) if not a.startswith("no:") and a not in plugins]
    where = recorded_plugin_origins(run_dir)
    options = " ".join(f"-p {_reload_argument(m, where.get(m, ''))}" for m in missing)
    hint = (
        f"the run was trained with {', '.join(repr(m) for m in missing)} loaded with -p; a module named in a run "
        f"directory is never imported automatically (the directory may come from anyone): if you trust "
        f"{'it' if len(missing) == 1 else 'them'}, add {options} to the command"
    )
    try:
        recipe = load_and_resolve(recipe_file, overrides, [*blocks, *plugins], saved=True)
    except RecipeError as exc:
        if not missing:
            raise
        raise RecipeError(
            [*exc.issues, RecipeIssue(str(Path(run_dir) / "environment.json"), "plugin_args", hint)]
        ) from None
    if missing:
        log.warning("%s", hint)
    return recipe


#: ``sslhub evaluate --set`` prefixes: the evaluation options, and the encoders' (for another read-out).
EVALUATE_OVERRIDE_PREFIXES = ("evaluate.", "encoder.", "encoders.")


def _load_run(run_dir: Path, plugins: list[str], overrides: list[str] | None = None) -> tuple[Run, TrainedModel]:
    """The run and its trained model; with ``encoder.*`` overrides, the encoders' weights alone."""
    from sslhub.engine import Run

    recipe_file = run_dir / "recipe.yaml"
    if not recipe_file.exists():
        raise SSLHubError(f"{run_dir} is not an sslhub run directory (no recipe.yaml)")
    overrides = overrides or []
    recipe = resolve_saved_recipe(recipe_file, overrides, run_dir, plugins)
    run = Run(recipe, run_dir, resume=False, show_progress=False)
    encoders_changed = any(o.strip().startswith(EVALUATE_OVERRIDE_PREFIXES[1:]) for o in overrides)
    return run, run.load_trained(encoders_only=encoders_changed)


def _check_evaluate_arguments(args: argparse.Namespace) -> None:
    """Refuse option combinations of ``sslhub evaluate`` that cannot mean anything, before loading."""
    given = [option for option in ("group", "label") if getattr(args, option) is not None]
    if args.data is None and given:
        raise SSLHubError(f"--{given[0]} applies to --data only")
    if args.data is None and args.name is not None and not args.overrides:
        raise SSLHubError("--name applies to --data or --set only")
    if args.data is not None and not 0 < args.test_fraction < 1:
        raise SSLHubError(f"--test-fraction must be between 0 and 1, got {args.test_fraction}")
    for assignment in args.overrides:
        if not assignment.strip().startswith(EVALUATE_OVERRIDE_PREFIXES):
            raise SSLHubError(
                f"--set {assignment}: sslhub evaluate changes only evaluate.* keys and the encoder's read-out "
                "(encoder.* / encoders.*; the run's other sections are what it was trained with), e.g. "
                "--set evaluate.few_shot.draws=30"
            )
    if args.overrides and args.data is None and args.name is None:
        raise SSLHubError(
            "--set writes evaluation-NAME.json beside the run's own evaluation.json: give it a --name, "
            "e.g. --name draws30"
        )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sslhub.data_option import data_source, labeled_split, source_name

    _check_evaluate_arguments(args)
    run, trained = _load_run(args.run_dir, args.plugins, args.overrides)
    modality, encoders, objectives = trained.modality, trained.encoders, trained.objectives
    if args.data is None and not args.overrides:
        report = run.evaluate(modality, encoders, objectives)
        print(json.dumps(report, indent=2, default=str))
        return 0
    split = None
    name = source_name({}, args.name)
    if args.data is not None:
        raw = data_source(args, modality)
        split = labeled_split(run, modality, raw, args.test_fraction, args.split_seed)
        name = source_name(raw, args.name)
    output = f"evaluation-{name}.json"
    report = run.evaluate(modality, encoders, objectives, split=split, output_name=output)
    print(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.run_dir / output}", file=sys.stderr)
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from sslhub.finetune_command import finetune_command

    return finetune_command(args)


def cmd_export(args: argparse.Namespace) -> int:
    from sslhub.export_formats import parse_formats

    formats = parse_formats(args.formats)
    if "onnx" not in formats and (args.include_head or args.opset or args.allow_mismatch):
        raise SSLHubError("--include-head, --opset and --allow-mismatch apply to the onnx format; add it to --format")
    run, trained = _load_run(args.run_dir, args.plugins)
    weights: dict[str, Any] = {}
    if set(formats) - {"onnx"}:
        weights = run.export_weights(trained.encoders, trained.modality, formats, args.out)
    results: dict[str, Any] = {}
    if "onnx" in formats:
        # The ONNX metadata lists every format written (native only where an encoder has one).
        written = list(dict.fromkeys(["onnx", *(f for result in weights.values() for f in result["formats"])]))
        results = run.export(
            trained.encoders,
            trained.modality,
            out_dir=args.out,
            opset=args.opset,
            allow_mismatch=args.allow_mismatch,
            objectives=trained.objectives,
            include_head=args.include_head,
            formats=written,
        )
    for result in [*weights.values(), *results.values()]:
        print(result["summary"])
    # Objectives' own models (vq_vae's tokenizer) are ONNX too.
    extras = run.export_objective_models(trained, args.out) if "onnx" in formats else {}
    for name, result in extras.items():
        print(f"{name}: {result.get('summary') or result.get('error')}")
    passed = [r["passed"] for r in results.values()] + [r.get("passed", False) for r in extras.values()]
    return 0 if all(passed) else 4


def cmd_embed(args: argparse.Namespace) -> int:
    from sslhub.embed_files import FileEmbedder, resolve_model_dir, save_embeddings

    embedder = FileEmbedder(
        resolve_model_dir(args.model, args.encoder), text_field=args.text_field, threads=args.threads
    )
    embeddings = embedder.embed(args.inputs, batch_size=args.batch_size)
    vectors, sources = save_embeddings(embeddings, args.out)
    rows, dim = embeddings.vectors.shape
    print(f"embedded {rows} inputs ({embedder.kind}) with {embedder.model.path}: [{rows}, {dim}] float32")
    print(f"wrote {vectors} and {sources} (the input behind each row)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from sslhub.predict import predict_command

    return predict_command(
        args.model, args.inputs, args.out, batch_size=args.batch_size, threads=args.threads, text_field=args.text_field
    )


def cmd_recipe(args: argparse.Namespace) -> int:
    from sslhub.schema import recipe_json_schema

    print(json.dumps(recipe_json_schema(load_catalog(args.plugins)), indent=2))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from sslhub.report import write_report

    out = args.out or (args.run_dirs[0] / "report.html" if len(args.run_dirs) == 1 else Path("report.html"))
    print(f"report: {write_report(args.run_dirs, out)}")
    return 0


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from sslhub.scaffold import create_plugin, default_directory, next_steps

    path = create_plugin(args.name, args.directory or default_directory(args.name))
    print(next_steps(args.name, path))
    return 0


COMMANDS = {
    "new-plugin": cmd_new_plugin,
    "run": cmd_run,
    "validate": cmd_validate,
    "plugins": cmd_plugins,
    "list": cmd_list,
    "evaluate": cmd_evaluate,
    "finetune": cmd_finetune,
    "export": cmd_export,
    "embed": cmd_embed,
    "predict": cmd_predict,
    "recipe": cmd_recipe,
    "report": cmd_report,
}

if __name__ == "__main__":
    sys.exit(main())
