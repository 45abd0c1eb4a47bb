"""Which plugin's code failed: attribution of run-time errors to the plugin that raised them.

A component that breaks its contract at run time would otherwise surface as a bare
``AttributeError`` from the core. These helpers name the plugin (from the ``sslhub`` entry
points, or the module for a ``-p`` plugin) and the place in its code.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import sys
import traceback
from pathlib import Path

_CORE_PACKAGE = "sslhub"


@functools.cache
def _entry_point_packages() -> dict[str, str]:
    """``{top-level package: "plugin 'NAME' (DIST VERSION)"}`` for the installed sslhub plugins."""
    packages: dict[str, str] = {}
    for entry_point in importlib.metadata.entry_points(group="sslhub"):
        dist = getattr(entry_point, "dist", None)
        owner = f" ({dist.metadata['Name']} {dist.version})" if dist is not None else ""
        packages.setdefault(entry_point.value.split(".")[0].split(":")[0], f"plugin '{entry_point.name}'{owner}")
    return packages


def plugin_label(module_name: str) -> str:
    """The plugin a module belongs to, in words: an installed plugin, else the module itself."""
    top = module_name.split(".")[0]
    return _entry_point_packages().get(top, f"module '{module_name}'")


def _is_library(module_name: str, filename: str) -> bool:
    """Code that is neither a plugin nor a user's module: the core, the standard library, dependencies."""
    top = module_name.split(".")[0]
    if top == _CORE_PACKAGE or top in sys.stdlib_module_names or top.startswith("_"):
        return True
    if top in _entry_point_packages():
        return False
    return "site-packages" in Path(filename).parts or "dist-packages" in Path(filename).parts


def raised_in(exc: BaseException) -> str | None:
    """``plugin 'vision' (sslhub 0.1.0), at .../simclr.py:42 in forward`` for the innermost plugin frame.

    None when no frame of the traceback is plugin or user code (the failure is the core's or a library's).
    """
    for frame, line in reversed(list(traceback.walk_tb(exc.__traceback__))):
        module_name = frame.f_globals.get("__name__", "")
        filename = frame.f_code.co_filename
        if module_name and not _is_library(module_name, filename):
            return f"{plugin_label(module_name)}, at {filename}:{line} in {frame.f_code.co_name}"
    return None


def extra_hint(exc: BaseException, dist: importlib.metadata.Distribution | None) -> str:
    """``; pip install 'sslhub[audio]'`` when the missing module is a dependency the plugin's distribution
    declares under an extra (a plugin's optional stack), else nothing."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    if not missing or dist is None:
        return ""
    wanted = canonicalize_name(missing.split(".")[0])
    for text in dist.requires or []:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", str(requirement.marker or ""))
        if extra and canonicalize_name(requirement.name) == wanted:
            return f"; it is part of the '{extra[1]}' extra: pip install '{dist.metadata['Name']}[{extra[1]}]'"
    return ""


def missing_extra_hint(exc: BaseException) -> str:
    """:func:`extra_hint` against every installed plugin distribution (a plugin imports its stack lazily)."""
    distributions = {
        ep.dist.metadata["Name"]: ep.dist
        for ep in importlib.metadata.entry_points(group="sslhub")
        if getattr(ep, "dist", None) is not None
    }
    return next((hint for dist in distributions.values() if (hint := extra_hint(exc, dist))), "")
