"""A third-party plugin that ends training from a callback: asks the loop to stop, or kills the process.

Both are driven by environment variables so an end-to-end test sets them per run:
``SSLHUB_TEST_STOP_AT_STEP`` asks to stop (through the public ``RunInfo.request_stop``, from
rank 0 only, as a plugin's callback runs by default) and ``SSLHUB_TEST_KILL_AT_STEP`` sends
SIGKILL to the process after that step, a kill at an exact point of the run.
"""

from __future__ import annotations

import os
import signal

import sslhub
from sslhub import hookimpl


class StopAt(sslhub.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, run, event):
        if event.step == self.step:
            run.request_stop(f"the test plugin stops at step {self.step}", asked_at=event.step)


class KillAt(sslhub.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, run, event):
        if event.step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


@hookimpl
def sslhub_register_callbacks(registry):
    if os.environ.get("SSLHUB_TEST_STOP_AT_STEP"):
        registry.add(StopAt(int(os.environ["SSLHUB_TEST_STOP_AT_STEP"])))
    if os.environ.get("SSLHUB_TEST_KILL_AT_STEP"):
        registry.add(KillAt(int(os.environ["SSLHUB_TEST_KILL_AT_STEP"])))
