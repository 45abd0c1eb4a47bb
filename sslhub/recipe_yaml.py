"""Reading recipe YAML safely, remembering the line of every key for error messages."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from sslhub.errors import RecipeError, RecipeIssue

PathKey = tuple[str | int, ...]


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (SafeLoader already refuses ``!!python`` tags)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # PyYAML itself reports the unhashable key, with its line
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key '{key}' (first defined on line {seen[key] + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _line_map(node: yaml.Node, path: PathKey, lines: dict[PathKey, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[(*path, key)] = key_node.start_mark.line + 1
            _line_map(value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, (*path, index), lines)


class RecipeSource:
    """A recipe's raw data, where it came from, and the line of each key path."""

    def __init__(self, data: dict[str, Any], file: str, lines: dict[PathKey, int]):
        self.data = data
        self.file = file
        self.lines = lines
        self.overridden: set[PathKey] = set()

    def line_of(self, path: PathKey) -> int | None:
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def location(self, path: PathKey) -> str:
        for override in self.overridden:
            if tuple(path[: len(override)]) == override:
                return f"{self.file} (--set {format_path(override)})"
        line = self.line_of(path)
        return f"{self.file}:{line}" if line else self.file


def format_path(path: PathKey) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def load_recipe_text(text: str, file: str = "<recipe>") -> RecipeSource:
    """Parse YAML text into a :class:`RecipeSource`; syntax problems raise :class:`RecipeError`."""
    try:
        node = yaml.compose(text, Loader=_StrictLoader)
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        problem = exc.problem or str(exc)
        if "could not determine a constructor" in problem:
            problem = f"tag {problem.split('tag ', 1)[-1]} is not allowed: recipes hold data only, never code"
        raise RecipeError([RecipeIssue(where, "", f"YAML error: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise RecipeError([RecipeIssue(file, "", f"YAML error: {exc}")]) from None
    if data is None:
        raise RecipeError([RecipeIssue(file, "", "the recipe is empty")])
    if not isinstance(data, dict):
        raise RecipeError([RecipeIssue(f"{file}:1", "", "a recipe must be a mapping of sections (name, data, ...)")])
    lines: dict[PathKey, int] = {}
    _line_map(node, (), lines)
    return RecipeSource(data, file, lines)


def load_recipe_file(path: str | Path) -> RecipeSource:
    path = Path(path)
    if not path.exists():
        raise RecipeError([RecipeIssue(str(path), "", "recipe file not found")])
    if path.is_dir():
        raise RecipeError([RecipeIssue(str(path), "", "is a directory, expected a recipe .yaml file")])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError([RecipeIssue(str(path), "", f"cannot read recipe: {exc}")]) from None
    return load_recipe_text(text, str(path))


def apply_override(source: RecipeSource, assignment: str) -> None:
    """Apply one ``--set a.b.c=value`` (value parsed as YAML; list items by index: ``objectives.0.temperature``)."""
    if "=" not in assignment:
        raise RecipeError([RecipeIssue("--set", assignment, "expected KEY=VALUE, for example train.steps=100")])
    key, raw_value = assignment.split("=", 1)
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in key.strip().split(".") if p]
    if not parts:
        raise RecipeError([RecipeIssue("--set", assignment, "empty key")])
    try:
        value = yaml.load(raw_value, Loader=_StrictLoader)  # noqa: S506
    except yaml.YAMLError as exc:
        raise RecipeError([RecipeIssue("--set", key, f"cannot parse value {raw_value!r}: {exc}")]) from None
    target: Any = source.data
    for depth, part in enumerate(parts[:-1]):
        where = format_path(tuple(parts[: depth + 1]))
        if isinstance(part, int):
            if not isinstance(target, list) or part >= len(target):
                raise RecipeError([RecipeIssue("--set", where, "no such list item")])
            target = target[part]
        else:
            if not isinstance(target, dict):
                raise RecipeError([RecipeIssue("--set", where, "is not a section")])
            target = target.setdefault(part, {})
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(target, list) or last >= len(target):
            raise RecipeError([RecipeIssue("--set", key, "no such list item")])
        target[last] = value
    else:
        if not isinstance(target, dict):
            raise RecipeError([RecipeIssue("--set", key, "parent is not a section")])
        target[last] = value
    source.overridden.add(tuple(parts))
