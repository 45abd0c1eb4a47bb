"""Bad ``-p`` arguments: a plugin named explicitly loads or the command fails, naming it and why.

Run through ``main()`` in process (``sslhub list objectives``), in a folder holding the plugin
files the cases refer to.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from sslhub.cli import main

DATA = Path(__file__).resolve().parent.parent / "data"

FILES = {
    "raises_on_import.py": "raise RuntimeError('broken at import')\n",
    "file_plugin.py": (
        "from sslhub import hookimpl\n"
        "from file_plugin_helper import NAME  # a sibling module: the file's folder is on sys.path\n\n\n"
        "@hookimpl\n"
        "def sslhub_register_objectives(registry):\n"
        "    registry.register(NAME, lambda params, context: None)\n"
    ),
    "file_plugin_helper.py": "NAME = 'from_a_file'\n",
    "notes.txt": "not python\n",
}


@dataclass(frozen=True)
class Case:
    id: str
    bug: str
    plugins: tuple[str, ...]
    exit_code: int
    stderr: tuple[str, ...] = ()
    stdout: tuple[str, ...] = ()


CASES = [
    Case(
        "module_does_not_exist",
        "only a warning, exit 0",
        ("sslhub_no_such_module",),
        1,
        (
            "error: a -p argument failed:\n  plugin 'sslhub_no_such_module' (module sslhub_no_such_module): "
            "failed to import module 'sslhub_no_such_module' given with -p: ModuleNotFoundError",
        ),
    ),
    Case(
        "module_raises_on_import",
        "only a warning, exit 0",
        ("raises_on_import",),
        1,
        ("failed to import module 'raises_on_import' given with -p: RuntimeError: broken at import",),
    ),
    Case(
        "typo_after_no",
        "-p no:visoin silently blocked nothing",
        ("no:visoin",),
        1,
        ("-p no:visoin: no installed plugin is named 'visoin'; did you mean 'vision'?",),
    ),
    Case(
        "unknown_name_after_no_without_close_match",
        "silently blocked nothing",
        ("no:zzzzzz",),
        1,
        ("-p no:zzzzzz: no installed plugin is named 'zzzzzz'; installed: ", "vision"),
    ),
    Case(
        "path_to_a_py_file",
        "TypeError about a package argument",
        ("./file_plugin.py",),
        0,
        stdout=("  from_a_file  [file_plugin]",),
    ),
    Case(
        "path_to_a_py_file_that_raises",
        "TypeError about a package argument",
        ("./raises_on_import.py",),
        1,
        ("failed to import './raises_on_import.py' given with -p: RuntimeError: broken at import",),
    ),
    Case(
        "path_to_a_missing_py_file",
        "TypeError about a package argument",
        ("./missing.py",),
        1,
        ("no such file './missing.py' given with -p",),
    ),
    Case(
        "path_to_a_file_that_is_not_python",
        "TypeError about a package argument",
        ("./notes.txt",),
        1,
        ("'./notes.txt' is not a module name; -p takes a module name (my_package.plugin) or a path to a .py file",),
    ),
    Case(
        "not_a_module_name",
        "ModuleNotFoundError as a warning, exit 0",
        ("my-plugin",),
        1,
        ("'my-plugin' is not a module name; -p takes a module name",),
    ),
    Case(
        "two_bad_arguments_both_named",
        "only warnings",
        ("no:visoin", "sslhub_no_such_module"),
        1,
        ("error: 2 -p arguments failed:\n", "'visoin'", "'sslhub_no_such_module'"),
    ),
]


@pytest.fixture
def plugin_folder(tmp_path, monkeypatch):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(DATA))
    monkeypatch.setenv("SSLHUB_DISABLE_PLUGINS", "sslhub")  # the built-ins stay installed, unimported
    monkeypatch.delenv("SSLHUB_STRICT_PLUGINS", raising=False)
    yield tmp_path
    for name in ("raises_on_import", "file_plugin", "file_plugin_helper"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_plugin_argument(case: Case, plugin_folder, capsys):
    arguments = ["list", "objectives", "-p", "toy_plugin"]
    for plugin in case.plugins:
        arguments += ["-p", plugin]
    assert main(arguments) == case.exit_code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    for fragment in case.stderr:
        assert fragment in captured.err
    for fragment in case.stdout:
        assert fragment in captured.out
    if case.exit_code:
        assert captured.out == ""


def test_sslhub_plugins_lists_a_failed_p_module_and_exits_1(plugin_folder, capsys):
    """The listing still shows what loaded, but a module named with -p that failed fails the command."""
    assert main(["plugins", "-p", "toy_plugin", "-p", "raises_on_import"]) == 1
    captured = capsys.readouterr()
    assert "raises_on_import [ERROR] (-p: raises_on_import)" in captured.out
    assert "toy_plugin [ok] (-p: toy_plugin)" in captured.out
    assert "error: plugin 'raises_on_import' (module raises_on_import): failed to import" in captured.err
