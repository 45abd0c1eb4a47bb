"""Whole run against killed-and-resumed run of a shipped recipe: the final weights must be bitwise equal.

The kill is a real SIGKILL at an exact step, sent by the test plugin ``toy_stop_plugin``
(``SSLHUB_TEST_KILL_AT_STEP``) from inside the run, so the test does not race the run's speed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from toy_runs import final_weights, sslhub

#: a few steps, a checkpoint every two, nothing after training.
SHORT = {
    "train.steps": "6",
    "train.checkpoint_every": "2",
    "train.log_every": "1",
    "train.threads": "1",  # "auto" follows the load average, and another thread count sums in another order
    "evaluate.enabled": "false",
    "export": "null",
    "report.enabled": "false",
}


def _sets(settings: dict[str, str]) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def assert_resume_is_exact(
    recipe: Path,
    tmp_path: Path,
    settings: dict[str, str],
    kill_at: int = 3,
    then: Callable[[Path], dict[str, str]] | None = None,
) -> None:
    """Run ``recipe`` whole, and again killed after step ``kill_at`` and resumed; compare the final weights.

    Args:
        then: settings for the second run, from the whole run's directory (to reuse what the
            first run derived from data in a way that is not reproducible, such as a tokenizer).
    """
    options = _sets({**SHORT, **settings})
    whole = sslhub("run", str(recipe), "--out", str(tmp_path / "whole"), "--progress", "off", *options)
    assert whole.returncode == 0, whole.stderr[-3000:]
    options += _sets(then(tmp_path / "whole")) if then is not None else []
    parts = tmp_path / "parts"
    command = ["run", str(recipe), "-p", "toy_stop_plugin", "--out", str(parts), "--progress", "off", *options]
    killed = sslhub(*command, env={"SSLHUB_TEST_KILL_AT_STEP": str(kill_at)})
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (parts / "summary.json").exists()
    resumed = sslhub("run", str(recipe), "--resume", str(parts), "--progress", "off")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    a, b = final_weights(tmp_path / "whole"), final_weights(parts)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after the resume"
