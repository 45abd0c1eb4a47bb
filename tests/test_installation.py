"""The installed environment: every built-in plugin imports, and the PyTorch trio is the pinned one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points, version
from pathlib import Path

import pytest
from installation_check import BUILTIN_DISTRIBUTION, builtin_plugin_import_errors

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_every_builtin_plugin_imports():
    assert builtin_plugin_import_errors() == []


def test_all_five_builtin_plugins_are_declared():
    names = {e.name for e in entry_points(group="sslhub") if e.dist and e.dist.name == BUILTIN_DISTRIBUTION}
    assert names == {"vision", "text", "audio", "autoencoder", "multimodal"}


def all_requirements() -> list[str]:
    """The core dependencies and every plugin extra's (not ``dev`` or ``bench``, which are tools)."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    extras = project["optional-dependencies"]
    plugin_extras = [r for name in ("vision", "text", "audio") for r in extras[name]]
    return project["dependencies"] + plugin_extras


def test_pytorch_family_is_pinned_exactly_and_installed_at_the_pins():
    dependencies = all_requirements()
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
    dependencies = all_requirements()
    unbounded = [d for d in dependencies if "==" not in d and "<" not in d and not d.startswith(UNBOUNDED_ON_PURPOSE)]
    assert unbounded == []


WITHOUT_MODULES = Path(__file__).resolve().parent / "data" / "without_modules.py"
AUDIO_AND_TEXT_STACKS = "torchaudio,soundfile,transformers,tokenizers"


def sslhub_without(modules: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("SSLHUB_STRICT_PLUGINS", None)
    command = [sys.executable, str(WITHOUT_MODULES), modules, *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_the_extras_cover_what_the_plugins_need():
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    assert extras["all"] == ["sslhub[vision,text,audio]"]
    assert {r.split("=")[0].split(">")[0] for r in extras["audio"]} == {"torchaudio", "soundfile"}
    assert {r.split(">")[0] for r in extras["text"]} == {"transformers", "tokenizers"}


@pytest.mark.slow
def test_without_the_audio_and_text_extras_images_still_train_and_the_rest_names_its_extra():
    """A user who wants only images installs ``sslhub[vision]``: image recipes run; the others say what to install."""
    listing = sslhub_without(AUDIO_AND_TEXT_STACKS, "plugins")
    assert listing.returncode == 0, listing.stderr
    assert "vision [ok]" in listing.stdout and "autoencoder [ok]" in listing.stdout
    assert "it is part of the 'audio' extra: pip install 'sslhub[audio]'" in listing.stdout
    assert "it is part of the 'text' extra: pip install 'sslhub[text]'" in listing.stdout
    recipes = Path(__file__).resolve().parents[1] / "recipes"
    run = sslhub_without(AUDIO_AND_TEXT_STACKS, "run", str(recipes / "image_simclr.yaml"), "--dry-run")
    assert run.returncode == 0, run.stderr
    audio = sslhub_without(AUDIO_AND_TEXT_STACKS, "validate", str(recipes / "audio_masked.yaml"))
    assert audio.returncode != 0 and "Traceback" not in audio.stderr
    assert "plugin 'audio' (sslhub" in audio.stderr and "failed to load" in audio.stderr


def test_a_plugin_importing_its_stack_late_still_names_the_extra():
    """The vision plugin imports timm only when a timm encoder is built: the error still says what to install."""
    recipes = Path(__file__).resolve().parents[1] / "recipes"
    result = sslhub_without("timm", "run", str(recipes / "mae_image.yaml"), "--dry-run")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "No module named 'timm'" in result.stderr
    assert "raised in plugin 'vision'" in result.stderr
    assert "pip install 'sslhub[vision]'" in result.stderr
