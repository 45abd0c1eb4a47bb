"""Composite modalities: building a modality's parts by name, and checking them before a build.

A composite modality (``image_text``) is registered with ``modalities=[...]``, the parts its
batches hold. It never imports the plugins behind those parts: its factory asks its
:class:`~sslhub.components.BuildContext` for each one (:meth:`BuildContext.part`), and this
module builds it from the run's catalog. Recipe validation uses :func:`part_issues` so that a
missing part (``-p no:vision`` with ``image_text``) or a bad part parameter is reported at its
recipe line before anything is built.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from sslhub.errors import SSLHubError

if TYPE_CHECKING:
    from sslhub.catalog import Catalog
    from sslhub.components import BuildContext, Modality, Params
    from sslhub.registry import Component, Registry


def build_part(context: BuildContext, name: str, params: dict[str, Any]) -> Modality:
    """The registered modality ``name`` built with ``params`` for the composite ``context.modality_name``."""
    catalog = context.catalog if context.catalog is not None else installed_catalog()
    composite = context.modality_name or "composite"
    registry = catalog.registry("modality")
    if name not in registry:
        raise SSLHubError(missing_part_message(composite, name, registry))
    component = registry.get(name)
    try:
        validated = component.params.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(_described(item) for item in exc.errors())
        raise SSLHubError(
            f"modality '{composite}': the parameters of its {name} part are invalid: {problems}"
        ) from None
    return component.factory(validated, replace(context, modality=None, modality_name=name))


def _described(item: Any) -> str:
    message = item["msg"].removeprefix("Value error, ")
    return f"{'.'.join(map(str, item['loc']))}: {message}" if item["loc"] else message


@functools.cache
def installed_catalog() -> Catalog:
    """The installed plugins, for parts built without a run's catalog (direct construction in code)."""
    from sslhub.catalog import Catalog

    return Catalog.load(strict=False)


def missing_part_message(composite: str, part: str, registry: Registry) -> str:
    """Why modality ``composite`` cannot get its ``part`` part, and what to do."""
    message = (
        f"modality '{composite}' needs the '{part}' modality for its {part} part, but no loaded plugin registers it"
    )
    if part in registry.hints:
        return f"{message}; it is provided by {registry.hints[part]}, which is not installed or failed to load"
    if registry.unavailable:
        return f"{message}; {'; '.join(registry.unavailable)} (see `sslhub plugins`)"
    return f"{message} (install the plugin that provides it)"


def part_problems(composite: Component, params: Params, catalog: Catalog) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems of ``composite``'s parts as ``(path under data:, message)``: parts no loaded plugin
    registers, then part parameters their own :class:`~sslhub.Params` refuse."""
    registry = catalog.registry("modality")
    problems: list[tuple[tuple[str | int, ...], str]] = []
    given = params.part_params()
    for part in sorted(composite.modalities):
        if part not in registry:
            problems.append((("modality",), missing_part_message(composite.name, part, registry)))
            continue
        try:
            registry.get(part).params.model_validate(given.get(part, {}))
        except ValidationError as exc:
            problems += [_part_problem(item, params, composite.name, part) for item in exc.errors()]
    return problems


def _part_problem(item: Any, params: Params, composite: str, part: str) -> tuple[tuple[str | int, ...], str]:
    """One part's validation error at the composite's field it came from (``data:`` when none)."""
    fields = type(params).model_fields
    message = item["msg"].removeprefix("Value error, ")
    loc = tuple(item["loc"])
    if not loc:
        # a check across fields names the field it is about first ("mean must have 1 or 3 values")
        loc = next(((name,) for name in fields if message.startswith(f"{name} ")), ())
    path = loc if loc and loc[0] in fields else ()
    return path, f"{message} (in the {part} part of modality '{composite}')"


def modality_capabilities(modality: Component) -> frozenset[str]:
    """What ``modality`` declares (``provides=`` at registration).

    A composite declares its own: it has a capability when it implements the method itself
    (``image_text`` hands ``continuation_token_ids`` to its text part and declares
    ``word_continuations``); a part's declaration alone does not make the composite have it.
    """
    return frozenset(modality.provides)
