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
        path = tuple(path)
        for override in sorted(self.overridden, key=len, reverse=True):
            # Inside what a --set gave, or a section the --set created (--set trian.steps=5 makes trian).
            created = override[: len(path)] == path and path not in self.lines
            if path[: len(override)] == override or created:
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


#: larger recipe files are refused before parsing: a recipe names its data, it does not hold it.
MAX_RECIPE_BYTES = 1_000_000
#: values a recipe may hold once YAML aliases are expanded (an alias bomb expands to billions).
MAX_RECIPE_VALUES = 100_000


def load_recipe_text(text: str, file: str = "<recipe>") -> RecipeSource:
    """Parse YAML text into a :class:`RecipeSource`; syntax problems raise :class:`RecipeError`."""
    if len(text) > MAX_RECIPE_BYTES:
        raise RecipeError([RecipeIssue(file, "", _too_large(len(text)))])
    loader = None
    try:
        loader = _StrictLoader(text)
        node = loader.get_single_node()
        _check_expanded_size(node, file)
        data = loader.construct_document(node) if node is not None else None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        problem = f"character {chr(exc.character)!r} is not allowed in YAML (a binary file?)"
        raise RecipeError([RecipeIssue(f"{file}:{line}:{column}", "", f"YAML error: {problem}")]) from None
    except yaml.MarkedYAMLError as exc:
        raise RecipeError([_marked_issue(exc, file)]) from None
    except yaml.YAMLError as exc:
        raise RecipeError([RecipeIssue(file, "", f"YAML error: {exc}")]) from None
    except RecursionError:
        message = "YAML error: nested too deeply (or an alias refers to the section holding it)"
        raise RecipeError([RecipeIssue(file, "", message)]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:
        raise RecipeError([RecipeIssue(file, "", "the recipe is empty")])
    if not isinstance(data, dict):
        raise RecipeError([RecipeIssue(f"{file}:1", "", "a recipe must be a mapping of sections (name, data, ...)")])
    lines: dict[PathKey, int] = {}
    _line_map(node, (), lines)
    return RecipeSource(data, file, lines)


def _too_large(size: int) -> str:
    return (
        f"the recipe is {size / 1e6:.1f} MB; a recipe may be at most {MAX_RECIPE_BYTES / 1e6:.0f} MB "
        "(it names data files, it does not hold the data)"
    )


def _marked_issue(exc: yaml.MarkedYAMLError, file: str) -> RecipeIssue:
    mark = exc.problem_mark or exc.context_mark
    where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
    problem = exc.problem or str(exc)
    if "could not determine a constructor" in problem:
        problem = f"tag {problem.split('tag ', 1)[-1]} is not allowed: recipes hold data only, never code"
    return RecipeIssue(where, "", f"YAML error: {problem}")


def _check_expanded_size(root: yaml.Node | None, file: str) -> None:
    """Refuse a document whose aliases expand to more than :data:`MAX_RECIPE_VALUES` values.

    An alias is the node it names, shared; counting each node once per reference, memoised per
    node, costs one visit per distinct node however far the aliases would expand.
    """
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) not in sizes:
            if isinstance(node, yaml.MappingNode):
                children = [child for pair in node.value for child in pair]
            else:
                children = node.value if isinstance(node, yaml.SequenceNode) else []
            sizes[id(node)] = min(1 + sum(size(child) for child in children), MAX_RECIPE_VALUES + 1)
        return sizes[id(node)]

    if root is not None and size(root) > MAX_RECIPE_VALUES:
        raise RecipeError(
            [
                RecipeIssue(
                    file,
                    "",
                    f"the recipe expands to more than {MAX_RECIPE_VALUES} values once its YAML aliases (*name) "
                    "are repeated; an alias bomb? Write the values out or use fewer nested aliases",
                )
            ]
        )


def load_recipe_file(path: str | Path) -> RecipeSource:
    path = Path(path)
    if not path.exists():
        raise RecipeError([RecipeIssue(str(path), "", "recipe file not found")])
    if path.is_dir():
        raise RecipeError([RecipeIssue(str(path), "", "is a directory, expected a recipe .yaml file")])
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise RecipeError([RecipeIssue(str(path), "", _too_large(size))])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError([RecipeIssue(str(path), "", f"cannot read recipe: {exc}")]) from None
    return load_recipe_text(text, str(path))


def _step_into(target: Any, part: str | int, path: PathKey) -> Any:
    """The child ``part`` of ``target`` for a ``--set`` reaching below it; a missing or null section is made."""
    where = format_path(path)
    if isinstance(part, int):
        if not isinstance(target, list) or part >= len(target):
            raise RecipeError([RecipeIssue("--set", where, "no such list item")])
        return target[part]
    if not isinstance(target, dict):
        parent = format_path(path[:-1])
        raise RecipeError([RecipeIssue("--set", parent, f"is {_what_is(target)}, not a section: no {part!r} below it")])
    if target.get(part) is None:
        # ``export: null`` switched a section off; setting a field below it switches it on again.
        target[part] = {}
    return target[part]


def _what_is(value: Any) -> str:
    return "a list (give an item index)" if isinstance(value, list) else f"the value {value!r}"


#: a training budget is steps or epochs: a ``--set`` of one replaces the recipe's other
_OTHER_BUDGET: dict[PathKey, str] = {("train", "steps"): "epochs", ("train", "epochs"): "steps"}


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
        target = _step_into(target, part, tuple(parts[: depth + 1]))
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(target, list) or last >= len(target):
            raise RecipeError([RecipeIssue("--set", key, "no such list item")])
        target[last] = value
    else:
        if not isinstance(target, dict):
            parent = format_path(tuple(parts[:-1]))
            raise RecipeError(
                [RecipeIssue("--set", parent, f"is {_what_is(target)}, not a section: no {last!r} below it")]
            )
        target[last] = value
        other_budget = _OTHER_BUDGET.get(tuple(parts))
        if value is not None and other_budget and tuple(parts[:-1]) + (other_budget,) not in source.overridden:
            target.pop(other_budget, None)  # the recipe's epochs give way to a --set train.steps, and back
    source.overridden.add(tuple(parts))
