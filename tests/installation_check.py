"""Whether the installed environment can import every built-in plugin (used before collection)."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

#: the distribution that declares the built-in plugins in its ``sslhub`` entry-point group.
BUILTIN_DISTRIBUTION = "sslhub"


def builtin_plugin_import_errors() -> list[str]:
    """One line per built-in plugin that cannot be imported here: its name, module and the error."""
    problems = []
    for entry in entry_points(group="sslhub"):
        if entry.dist is None or entry.dist.name != BUILTIN_DISTRIBUTION:
            continue
        try:
            importlib.import_module(entry.module)
        except Exception as exc:  # noqa: BLE001 - any import failure means a broken environment
            problems.append(
                f"built-in plugin '{entry.name}' ({entry.module}) cannot be imported: {type(exc).__name__}: {exc}"
            )
    return problems
