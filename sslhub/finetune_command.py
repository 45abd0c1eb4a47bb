"""The body of ``sslhub finetune RUN_DIR``: check the request, load the run, fine-tune, report.

``--set finetune.KEY=VALUE`` overrides the ``finetune:`` section of the run's saved recipe and
is validated like any recipe field. ``--resume`` repeats the request saved in
``RUN_DIR/finetune/NAME/request.json`` and continues from the newest good checkpoint.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from sslhub.errors import SSLHubError
from sslhub.finetune_compare import ProbeOptions

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse option combinations that cannot mean anything, before loading anything."""
    given = [option for option in ("group", "label") if getattr(args, option) is not None]
    if args.data is None and given:
        raise SSLHubError(f"--{given[0]} applies to --data only")
    if not 0 < args.test_fraction < 1:
        raise SSLHubError(f"--test-fraction must be between 0 and 1, got {args.test_fraction}")
    if args.name is not None and not NAME_PATTERN.match(args.name):
        raise SSLHubError(f"--name {args.name!r}: use letters, digits, '_', '-' and '.' (a folder name)")
    for assignment in args.overrides:
        if not assignment.strip().startswith("finetune."):
            raise SSLHubError(
                f"--set {assignment}: sslhub finetune changes only finetune.* keys (the run's other sections are "
                "what it was pretrained with), e.g. --set finetune.steps=100"
            )
    if not (args.run_dir / "recipe.yaml").is_file():
        raise SSLHubError(f"{args.run_dir} is not an sslhub run directory (no recipe.yaml)")


def request_of(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """What to fine-tune: from the arguments, or, with ``--resume``, from the saved request."""
    from sslhub.finetune import REQUEST_FILE, load_request

    if args.resume:
        changed = [f"--{o}" for o in ("data", "encoder", "label", "group") if getattr(args, o) is not None]
        changed += ["--set"] if args.overrides else []
        if changed:
            raise SSLHubError(
                f"--resume continues with the options saved in {out_dir / REQUEST_FILE}; leave out {', '.join(changed)}"
            )
        return load_request(out_dir)
    if (out_dir / REQUEST_FILE).exists():
        raise SSLHubError(f"{out_dir} already holds a fine-tune; continue it with --resume or choose another --name")
    return {
        "overrides": list(args.overrides),
        "data": args.data,
        "label": args.label,
        "group": args.group,
        "test_fraction": args.test_fraction,
        "split_seed": args.split_seed,
        "encoder": args.encoder,
    }


def default_name(args: argparse.Namespace) -> str:
    from sslhub.data_option import source_name

    if args.name is not None:
        return args.name
    if args.data is None:
        return "default"
    return source_name({"path": args.data} if Path(args.data).expanduser().exists() else {}, None)


def choose_encoder(requested: str | None, keys: list[str]) -> str:
    if requested is None:
        if len(keys) == 1:
            return keys[0]
        raise SSLHubError(f"this run has several encoders ({', '.join(keys)}): choose one with --encoder KEY")
    if requested not in keys:
        raise SSLHubError(f"--encoder {requested}: this run has no such encoder; its encoders are: {', '.join(keys)}")
    return requested


def labeled_split(run: Any, modality: Any, request: dict[str, Any]):
    """The split to fine-tune on: ``--data`` when given, else the run's own labeled split."""
    from sslhub import data_option

    if request["data"] is None:
        split = run.labeled_split(modality)
        if split is None:
            raise SSLHubError(
                f"{run.run_dir} has no labeled split (its data has no labels and the recipe no evaluate.data): "
                "give labeled data with --data SOURCE"
            )
        return split
    source = argparse.Namespace(data=request["data"], label=request["label"], group=request["group"])
    raw = data_option.data_source(source, modality)
    return data_option.labeled_split(run, modality, raw, request["test_fraction"], request["split_seed"])


def probe_options(evaluate: Any) -> ProbeOptions:
    """The linear probe's options from the run's ``evaluate:`` section (defaults where it has none)."""
    defaults = ProbeOptions()
    full, few = evaluate.linear_probe, evaluate.few_shot
    return ProbeOptions(
        epochs=full.epochs if full else defaults.epochs,
        weight_decay=full.weight_decay if full else defaults.weight_decay,
        few_shot_epochs=few.epochs if few else defaults.few_shot_epochs,
        few_shot_weight_decay=few.weight_decay if few else defaults.few_shot_weight_decay,
    )


def finetune_command(args: argparse.Namespace) -> int:
    from sslhub.cli import resolve_saved_recipe
    from sslhub.distributed import init_distributed, is_main_process
    from sslhub.engine import Run
    from sslhub.finetune import FinetuneJob, format_results, run_finetune, save_request

    check_arguments(args)
    out_dir = args.run_dir / "finetune" / default_name(args)
    request = request_of(args, out_dir)
    recipe = resolve_saved_recipe(args.run_dir / "recipe.yaml", request["overrides"], args.run_dir, args.plugins)
    init_distributed(recipe.model.finetune.device or recipe.train.device)
    run = Run(recipe, args.run_dir, resume=False, show_progress=False)
    key = choose_encoder(request["encoder"], list(recipe.encoders))
    trained = run.load_trained()
    split = labeled_split(run, trained.modality, request)
    train = recipe.train
    spec = recipe.model.finetune.model_copy(
        update={
            "precision": recipe.model.finetune.precision or train.precision,
            "device": recipe.model.finetune.device or train.device,
            "compile": train.compile if recipe.model.finetune.compile is None else recipe.model.finetune.compile,
        }
    )
    export = recipe.model.export
    job = FinetuneJob(
        out_dir=out_dir,
        spec=spec,
        modality=trained.modality,
        encoder=trained.encoders[key],
        encoder_key=key,
        split=split,
        seed=recipe.model.seed if spec.seed is None else spec.seed,
        build_encoder=lambda: run.components.encoders(trained.modality)[key],
        probe=probe_options(recipe.model.evaluate),
        opset=export.onnx.opset if export and export.onnx else None,
        data_source=str(request["data"] or ""),
    )
    if not args.resume and is_main_process():
        save_request(out_dir, request)
    results = run_finetune(job, resume=args.resume)
    if is_main_process():
        print(format_results(results))
        print(f"fine-tune directory: {out_dir}")
    return 0
