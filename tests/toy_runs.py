"""Running the real ``sslhub`` command on the toy plugin (tests/data/toy_plugin.py) in a subprocess.

Shared by the engine and export/embed tests: the child finds the toy plugin on PYTHONPATH,
is offline, not in strict plugin mode, and has the vision, text and audio plugins blocked
(their imports are slow and their components are not what these tests are about).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parent / "data"
RECIPE = DATA / "toy_recipe.yaml"
BLOCK_BUILTINS = ["-p", "no:vision", "-p", "no:text", "-p", "no:audio"]


def free_port() -> int:
    """A TCP port nobody listens on now, for torchrun's rendezvous: fixed ports collide when
    test workers (pytest -n) start two process groups at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun_command(processes: int = 2) -> list[str]:
    """``python -m torch.distributed.run`` for ``processes`` ranks on a free port; append ``-m sslhub ...``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(processes),
        "--master-port",
        str(free_port()),
    ]


def sslhub_env() -> dict[str, str]:
    """The child's environment: toy plugin importable, offline, strict mode off."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(DATA), env.get("PYTHONPATH", "")])
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("SSLHUB_STRICT_PLUGINS", None)
    return env


def sslhub(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m sslhub ARGS`` with :func:`sslhub_env` (plus ``env``), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "sslhub", *args],
        capture_output=True,
        text=True,
        env={**sslhub_env(), **(env or {})},
        timeout=timeout,
    )


def toy_run_command(out: Path, *extra: str, report: bool = False) -> list[str]:
    """``sslhub run`` of the toy recipe into ``out``, without export, as an argument list.

    Without the HTML report too unless ``report``: it costs more than the toy training (about 4 s:
    scikit-learn's import and three t-SNE maps) and only tests/core/test_report.py reads it, which
    asks for it by leaving the recipe's default (a report at the run's end) in place."""
    no_report = [] if report else ["--set", "report.enabled=false"]
    return [
        sys.executable,
        "-m",
        "sslhub",
        "run",
        str(RECIPE),
        "-p",
        "toy_plugin",
        *BLOCK_BUILTINS,
        "--out",
        str(out),
        "--set",
        "export=null",
        *no_report,
        *extra,
    ]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The model weights of a run's newest checkpoint, on the CPU."""
    manifest = json.loads((run_dir / "checkpoints" / "manifest.json").read_text())
    newest = manifest["checkpoints"][-1]["file"]
    return torch.load(run_dir / "checkpoints" / newest, map_location="cpu", weights_only=True)["model"]
