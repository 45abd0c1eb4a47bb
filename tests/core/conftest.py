"""Fixtures for the core tests: an isolated plugin environment, test plugins installed with pip,
and a runner for the real ``sslhub`` command.

Nothing here is autouse: the tests of the registry, catalog, recipe and CLI opt in with
``pytestmark = pytest.mark.usefixtures("sslhub_env")``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

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


def _fingerprint(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256(sys.version.encode())
    for root in paths:
        for file in sorted(root.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts and ".egg-info" not in str(file):
                digest.update(str(file.relative_to(PLUGINS)).encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def _pip(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def _can_build_wheels_here() -> bool:
    """setuptools >= 70.1 builds wheels by itself; older ones need the ``wheel`` package."""
    import setuptools

    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _install(packages: list[Path], target: Path, scratch: Path) -> None:
    # Build from copies so pip's in-tree build/ and .egg-info never land in tests/data.
    sources = []
    for package in packages:
        copy = scratch / "src" / package.name
        shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        sources.append(str(copy))
    env = dict(os.environ)
    # Building without isolation is several times faster than letting pip make a fresh build
    # environment per package, but needs a setuptools able to build wheels.
    isolation = ["--no-build-isolation", "--no-index"]
    if not _can_build_wheels_here():
        # Put a recent setuptools (from the configured package index) on PYTHONPATH instead of
        # touching the venv; if even that is impossible, fall back to pip's build isolation.
        build_env = scratch / "build-env"
        result = _pip("install", "--quiet", "--no-deps", "--target", str(build_env), "setuptools>=70.1")
        if result.returncode == 0:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(build_env), env.get("PYTHONPATH", "")]))
        else:
            isolation = []
    result = _pip("install", "--quiet", "--no-deps", *isolation, "--target", str(target), *sources, env=env)
    if result.returncode != 0:
        pytest.fail(f"pip could not install the test plugins:\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="session")
def installed_plugins(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Path:
    """A directory holding the test plugin distributions installed by pip (with .dist-info).

    Installed once per session; the result is also kept in pytest's cache under a hash of the
    plugin sources, because building five wheels costs ~10 s and the sources rarely change.
    """
    scratch = tmp_path_factory.mktemp("plugin-install")
    cache = getattr(pytestconfig, "cache", None)
    if cache is None:
        target = scratch / "site"
        _install(PLUGIN_PACKAGES, target, scratch)
        return target
    target = cache.mkdir("sslhub-test-plugins") / _fingerprint(PLUGIN_PACKAGES)
    if not (target / ".complete").exists():
        fresh = scratch / "site"
        _install(PLUGIN_PACKAGES, fresh, scratch)
        (fresh / ".complete").write_text("installed by tests/core/conftest.py\n")
        shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(fresh, target)
        except OSError:  # another session put it there first
            return fresh
    return target


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
