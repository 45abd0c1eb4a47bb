"""Signals outside the training loop: SIGTERM during start-up exited 143 without a word.

The command starts in a subprocess with a ``-p`` plugin that, on import (start-up, before any
training), writes a marker and sleeps; SIGTERM sent then must end the command with exit 143 and
a message saying what happened, with no traceback and no run directory left holding a checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from toy_runs import toy_run_command

SLOW_PLUGIN = """\
from pathlib import Path
import time

Path({marker!r}).write_text("importing")
time.sleep(60)
"""


def test_sigterm_during_startup_says_so_and_exits_143(tmp_path):
    marker = tmp_path / "marker"
    (tmp_path / "slow_startup_plugin.py").write_text(SLOW_PLUGIN.format(marker=str(marker)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tmp_path), str(Path(__file__).parents[1] / "data"), env.get("PYTHONPATH", "")]
    )
    env.pop("SSLHUB_NO_SIGNAL_HANDLERS", None)
    out = tmp_path / "run"
    command = [*toy_run_command(out), "-p", "slow_startup_plugin"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the plugin was never imported"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, err
    assert "error: SIGTERM received outside the training loop, so nothing was saved now" in err
    assert "Traceback" not in err
    assert not (out / "checkpoints").exists()
