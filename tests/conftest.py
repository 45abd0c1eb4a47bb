"""Suite-wide setup: the folder of this file is on ``sys.path`` (pytest's default import mode
puts a rootless conftest's folder there), so test modules share helpers such as
``plugin_install`` by plain import."""

import importlib
from importlib.metadata import entry_points

import pytest

#: the built-in plugins declared in pyproject.toml's ``sslhub`` entry-point group.
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
            problems.append(f"built-in plugin '{entry.name}' ({entry.module}) cannot be imported: {type(exc).__name__}: {exc}")
    return problems


def pytest_sessionstart(session: pytest.Session) -> None:
    # A broken install (say torchaudio built for another torch) would otherwise surface as a
    # collection error in some unrelated test; stop first, with the cause in one line each.
    problems = builtin_plugin_import_errors()
    if problems:
        pytest.exit("the installed environment is broken:\n" + "\n".join(problems), returncode=3)
