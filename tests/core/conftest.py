"""Fixtures for the core tests: an isolated plugin environment, test plugins installed with pip,
and a runner for the real ``sslhub`` command.

Nothing here is autouse: the tests of the registry, catalog, recipe and CLI opt in with
``pytestmark = pytest.mark.usefixtures("sslhub_env")``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from plugin_install import cached_install

DATA = Path(__file__).resolve().parent.parent / "data"
PLUGINS = DATA / "plugins"
RECIPES = DATA / "recipes"
BAD_RECIPES = RECIPES / "bad"
#: the tiny plugin distributions, each a directory with its own pyproject.toml
PLUGIN_PACKAGES = sorted(p.parent for p in PLUGINS.glob("*/pyproject.toml"))
#: The built-in plugins (vision, text, audio, ...) are entry points of the "sslhub" distribution
#: itself. They are not what these tests are about and their set grows, so they are all blocked by
#: distribution name (SSLHUB_DISABLE_PLUGINS accepts those) unless a test asks for them.
BUILTIN_PLUGINS = "sslhub"


@pytest.fixture
def sslhub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, built-in plugins blocked, strict mode off, test plugin modules importable."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SSLHUB_DISABLE_PLUGINS", BUILTIN_PLUGINS)
    monkeypatch.delenv("SSLHUB_STRICT_PLUGINS", raising=False)
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.syspath_prepend(str(DATA))


@pytest.fixture
def toy_catalog(monkeypatch: pytest.MonkeyPatch):
    """A catalog holding only the toy plugin of tests/data (the engine tests' components)."""
    from sslhub.catalog import Catalog

    monkeypatch.syspath_prepend(str(DATA))
    return Catalog.load(["toy_plugin"], entry_points=False, python_registrations=False)


@pytest.fixture(scope="session")
def installed_plugins(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Path:
    """A directory holding the test plugin distributions installed by pip (with .dist-info).

    Installed once per session and kept in pytest's cache under a hash of the plugin sources,
    because building five wheels costs ~10 s and the sources rarely change.
    """
    return cached_install("test-plugins", PLUGIN_PACKAGES, pytestconfig, tmp_path_factory.mktemp("plugin-install"))


@pytest.fixture
def entry_point_plugins(installed_plugins: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The pip-installed test distributions are importable and their entry points visible in process."""
    monkeypatch.syspath_prepend(str(installed_plugins))
    return installed_plugins


SslhubRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def run_sslhub() -> SslhubRunner:
    """Run the real command: ``run_sslhub("list", "objectives", pythonpath=[...], env={...})``.

    The child gets ``HF_HUB_OFFLINE=1``, the built-in plugins blocked (unless ``env`` sets
    ``SSLHUB_DISABLE_PLUGINS``), no strict mode unless asked, the test plugin modules importable,
    and runs in tests/data so ``-p toy_plugin`` works as it does for a user.
    """

    def run(
        *args: str,
        env: dict[str, str] | None = None,
        pythonpath: Iterable[Path | str] = (),
        command: list[str] | None = None,
        cwd: Path = DATA,
    ) -> subprocess.CompletedProcess[str]:
        child_env = {
            key: value for key, value in os.environ.items() if key not in {"SSLHUB_STRICT_PLUGINS", "PYTHONPATH"}
        }
        child_env.update({"HF_HUB_OFFLINE": "1", "SSLHUB_DISABLE_PLUGINS": BUILTIN_PLUGINS})
        child_env.update(env or {})
        child_env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), str(PLUGINS)])
        return subprocess.run(
            [*(command or [sys.executable, "-m", "sslhub"]), *args],
            capture_output=True,
            text=True,
            env=child_env,
            cwd=cwd,
            timeout=180,
            check=False,
        )

    return run
