"""pip-installing plugin distributions into a folder, for tests that need real entry points.

Three test modules install plugins: the tiny distributions of the catalog tests, the
third-party ``sslhub_vicreg`` and the package ``sslhub new-plugin`` writes. Installs go to a
``--target`` folder (never the venv), build from a copy so ``tests/data`` stays clean, and
are cached in pytest's cache under a hash of their sources.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest


def pip(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m pip ARGS`` of the running interpreter, captured, never raising."""
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def build_environment(cache_dir: Path) -> tuple[dict[str, str], list[str]]:
    """``(env, pip options)`` for building wheels, fastest first.

    Building without isolation is several times faster than a fresh build environment per
    package, but needs a setuptools that builds wheels by itself (>= 70.1) or the ``wheel``
    package. An older one (Python 3.11 ships 65.x) gets a recent setuptools from the package
    index on ``PYTHONPATH`` (cached, the venv untouched); if even that fails, pip's own build
    isolation is the fallback.
    """
    import setuptools

    env = dict(os.environ)
    fast = ["--no-build-isolation", "--no-index"]
    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    if (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None:
        return env, fast
    build_env = cache_dir / "wheel-building-setuptools"
    if not (build_env / ".complete").exists():
        shutil.rmtree(build_env, ignore_errors=True)
        result = pip("install", "--quiet", "--no-deps", "--target", str(build_env), "setuptools>=70.1")
        if result.returncode != 0:
            return env, []
        (build_env / ".complete").write_text("")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(build_env), env.get("PYTHONPATH", "")]))
    return env, fast


def source_fingerprint(roots: Iterable[Path]) -> str:
    """A short hash of the Python version and every source file under ``roots``."""
    digest = hashlib.sha256(sys.version.encode())
    for root in roots:
        for file in sorted(root.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts and ".egg-info" not in str(file):
                digest.update(str(file.relative_to(root.parent)).encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def install(sources: Sequence[Path], target: Path, scratch: Path, cache_dir: Path) -> None:
    """``pip install --no-deps --target TARGET SOURCES...``, built from copies; fails the test on error."""
    copies = []
    for source in sources:
        copy = scratch / "src" / source.name
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        copies.append(str(copy))
    env, options = build_environment(cache_dir)
    result = pip("install", "--quiet", "--no-deps", *options, "--target", str(target), *copies, env=env)
    if result.returncode != 0:
        names = ", ".join(s.name for s in sources)
        pytest.fail(f"pip could not install {names}:\n{result.stdout}\n{result.stderr}")


def cache_dir_of(pytestconfig: pytest.Config, fallback: Path) -> Path:
    """The folder in pytest's cache for plugin builds (``fallback`` with the cache disabled)."""
    cache = getattr(pytestconfig, "cache", None)
    return cache.mkdir("sslhub-plugin-builds") if cache is not None else fallback


def cached_install(label: str, sources: Sequence[Path], pytestconfig: pytest.Config, scratch: Path) -> Path:
    """A folder where ``sources`` are pip-installed, reused while their sources are unchanged."""
    cache_dir = cache_dir_of(pytestconfig, scratch)
    target = cache_dir / f"{label}-{source_fingerprint(sources)}"
    if (target / ".complete").exists():
        return target
    fresh = scratch / "site"
    install(sources, fresh, scratch, cache_dir)
    (fresh / ".complete").write_text(f"installed for the {label} tests\n")
    shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(fresh, target)
    except OSError:  # another session put it there first
        return fresh
    return target
