"""The installed environment: every built-in plugin imports, and the PyTorch trio is the pinned one."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import entry_points, version
from pathlib import Path

from installation_check import BUILTIN_DISTRIBUTION, builtin_plugin_import_errors

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_every_builtin_plugin_imports():
    assert builtin_plugin_import_errors() == []


def test_all_five_builtin_plugins_are_declared():
    names = {e.name for e in entry_points(group="sslhub") if e.dist and e.dist.name == BUILTIN_DISTRIBUTION}
    assert names == {"vision", "text", "audio", "autoencoder", "multimodal"}


def test_pytorch_family_is_pinned_exactly_and_installed_at_the_pins():
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = {}
    for requirement in dependencies:
        match = re.fullmatch(r"(torch|torchvision|torchaudio)==(\d+\.\d+\.\d+)", requirement)
        if match:
            pins[match[1]] = match[2]
    assert set(pins) == {"torch", "torchvision", "torchaudio"}, dependencies
    # local version labels (+cpu, +cu128) are the same release built for another device
    assert {name: version(name).split("+")[0] for name in pins} == pins


#: calendar-versioned and careful about compatibility; a bound would only block users' upgrades.
UNBOUNDED_ON_PURPOSE = ("packaging",)


def test_every_other_dependency_has_an_upper_bound():
    """CONTRIBUTING.md's dependency policy: exact pins for the PyTorch trio, ``<next major`` elsewhere."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    unbounded = [d for d in dependencies if "==" not in d and "<" not in d and not d.startswith(UNBOUNDED_ON_PURPOSE)]
    assert unbounded == []
