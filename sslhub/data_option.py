"""The ``--data`` option of ``sslhub evaluate`` and ``sslhub finetune``: a labeled source named on the
command line (a path the modality types, or a YAML mapping), checked and split as ``evaluate.data``
in a recipe would be, and the file-name-safe name its results are written under."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sslhub.errors import SSLHubError


def data_source(args: argparse.Namespace, modality) -> dict[str, Any]:
    """The ``--data`` source as a mapping: a path typed by the modality, or a YAML/JSON mapping."""
    import yaml

    path = Path(args.data).expanduser()
    if path.exists():
        try:
            return modality.labeled_source(path, label=args.label, group=args.group)
        except ValueError as error:
            raise SSLHubError(f"--data {args.data}: {error}") from None
    try:
        raw = yaml.safe_load(args.data)
    except yaml.YAMLError:
        raw = None
    if not isinstance(raw, dict):
        raise SSLHubError(
            f"--data {args.data}: no such file or folder, and not a mapping such as '{{type: folder, path: DIR}}'"
        )
    if args.group is not None or args.label is not None:
        raise SSLHubError("--data: with a mapping, give the label and group options inside it, not as --label/--group")
    return raw


def labeled_split(run, modality, raw: dict[str, Any], test_fraction: float, seed: int):
    """The split of a ``--data`` source, validated like ``evaluate.data`` in a recipe."""
    from sslhub.recipe import largest_shot, validate_labeled_source
    from sslhub.recipe_yaml import format_path

    needs = largest_shot(run.recipe.model.evaluate)
    source, problems = validate_labeled_source(run.recipe.modality.component, raw, test_fraction, seed, needs)
    if problems:
        lines = "\n".join(f"  {format_path(('source', *path))}: {message}" for path, message in problems)
        raise SSLHubError(f"--data: invalid labeled source ({len(problems)} problem(s)):\n{lines}")
    try:
        return modality.labeled_split(source, test_fraction, seed)
    except ValueError as error:
        raise SSLHubError(f"--data: {error}") from None


def source_name(raw: dict[str, Any], name: str | None) -> str:
    """A file-name-safe ``name``, else the last part of the source's path, else ``data``."""
    import re

    if name is None:
        name = Path(str(raw["path"])).expanduser().resolve().stem if raw.get("path") else "data"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip(".") or "data"
