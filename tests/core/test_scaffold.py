"""``sslhub new-plugin`` (sslhub.scaffold): the package it writes installs with pip, is found
through its entry point, and its own tests pass right after it is created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_install import cache_dir_of, install

from sslhub import Catalog
from sslhub.errors import SSLHubError
from sslhub.scaffold import ScaffoldError, create_plugin, default_directory, next_steps, render_files

EXPECTED_FILES = {
    ".gitignore",
    "README.md",
    "pyproject.toml",
    "recipes/demo_noise_digits.yaml",
    "sslhub_demo_noise/__init__.py",
    "sslhub_demo_noise/augmentation.py",
    "sslhub_demo_noise/callbacks.py",
    "sslhub_demo_noise/loss.py",
    "sslhub_demo_noise/objective.py",
    "sslhub_demo_noise/plugin.py",
    "tests/test_demo_noise_plugin.py",
}


@pytest.fixture
def cache_dir(pytestconfig: pytest.Config, tmp_path: Path) -> Path:
    return cache_dir_of(pytestconfig, tmp_path)


@pytest.fixture
def forget_demo_package():
    """Drops the installed demo package from ``sys.modules`` afterwards: monkeypatch restores
    ``sys.path`` but not the import cache, and a cached ``sslhub_demo_noise`` makes every later
    ``create_plugin("demo_noise", ...)`` in this process refuse the name as already importable."""
    yield
    for module in [m for m in sys.modules if m == "sslhub_demo_noise" or m.startswith("sslhub_demo_noise.")]:
        del sys.modules[module]


# -- names and directories ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("MyMethod", "plugin name 'MyMethod' is not a snake_case identifier: use lowercase letters, digits and "
         "single underscores, starting with a letter such as 'mymethod'"),
        ("my-method", "such as 'my_method'"),
        ("2fast", "is not a snake_case identifier"),
        ("my__method", "such as 'my_method'"),
        ("method_", "such as 'method'"),
        ("", "plugin name '' is not a snake_case identifier"),
        ("import", "plugin name 'import' is a Python keyword; choose another name"),
        ("sslhub_vicreg", "starts with 'sslhub': leave the prefix out"),
        ("a" * 41, "is longer than 40 characters"),
        # sslhub_vision (the built-in plugin) is importable: a plugin 'vision' would shadow it
        ("vision", "a module called sslhub_vision is already importable here, so a plugin 'vision' would clash"),
    ],
)  # fmt: skip
def test_bad_names_are_refused_with_a_clear_value_error(name, message, tmp_path):
    with pytest.raises(ValueError) as info:
        create_plugin(name, tmp_path / "plugin")
    assert message in str(info.value)
    assert isinstance(info.value, SSLHubError)  # the CLI prints it as "error: ..." without a traceback
    assert not (tmp_path / "plugin").exists()


def test_an_existing_non_empty_directory_or_a_file_is_never_overwritten(tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(ScaffoldError, match=r"occupied is not empty; give a new or empty directory"):
        create_plugin("demo_noise", occupied)
    assert [p.name for p in occupied.iterdir()] == ["notes.txt"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ScaffoldError, match="exists and is not a directory"):
        create_plugin("demo_noise", afile)
    assert afile.read_text() == "x"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert create_plugin("demo_noise", empty) == empty.resolve()


def test_the_package_layout_names_and_declared_sslhub_versions(tmp_path):
    root = create_plugin("demo_noise", tmp_path / "sslhub-demo-noise")
    assert {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} == EXPECTED_FILES
    assert set(render_files("demo_noise")) == EXPECTED_FILES
    pyproject = (root / "pyproject.toml").read_text()
    assert 'name = "sslhub-demo-noise"' in pyproject
    assert 'dependencies = ["sslhub>=0.1"]' in pyproject
    assert '[project.entry-points.sslhub]\ndemo_noise = "sslhub_demo_noise.plugin"\n' in pyproject
    plugin = (root / "sslhub_demo_noise" / "plugin.py").read_text()
    assert '"demo_noise_gaussian_noise"' in plugin and '"demo_noise_agreement"' in plugin
    # the plugin module only registers: the components are imported from their own modules
    assert "class " not in plugin and "sslhub_register_callbacks" in plugin
    assert default_directory("demo_noise") == Path("sslhub-demo-noise")
    steps = next_steps("demo_noise", root)
    assert f"pip install -e '{root}[test]'" in steps and "sslhub plugins" in steps


# -- from zero to an installed, tested plugin -------------------------------------------------------


@pytest.mark.slow
def test_the_scaffolded_plugin_installs_loads_through_its_entry_point_and_its_tests_pass(
    tmp_path, cache_dir, monkeypatch, forget_demo_package
):
    root = create_plugin("demo_noise", tmp_path / "sslhub-demo-noise")
    site = tmp_path / "site"
    install([root], site, tmp_path, cache_dir)
    assert (site / "sslhub_demo_noise" / "plugin.py").exists()

    # its generated tests, run by pytest in a child process against the installed copy (cwd is
    # neither the project nor the site directory, so only PYTHONPATH provides the package)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSLHUB_") and k != "PYTHONPATH"}
    env.update({"PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(root / "tests")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "6 passed" in tests.stdout
    assert f"rootdir: {root}" in tests.stdout  # its own pytest configuration, not sslhub's

    # installed, it is an entry-point plugin like any other (built-ins blocked to keep this quick)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("SSLHUB_DISABLE_PLUGINS", "sslhub")
    catalog = Catalog.load(strict=True)
    record = catalog.plugin_for("demo_noise")
    assert (record.distribution, record.version, record.module) == (
        "sslhub-demo-noise",
        "0.1.0",
        "sslhub_demo_noise.plugin",
    )
    assert [f"{c.kind}:{c.name}" for c in record.components] == [
        "augmentation:demo_noise_gaussian_noise",
        "objective:demo_noise_agreement",
    ]
