"""The run report: one self-contained HTML page of a run, or of several side by side.

``sslhub report RUN_DIR [RUN_DIR...]`` and the end of every run (``report.enabled``) call
:func:`write_report`. Plotting (matplotlib) is imported only here, never on the training path, and reading
a report needs no torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from sslhub.errors import SSLHubError


def write_report(run_dirs: Sequence[Path], out: Path) -> Path:
    """Read each run directory and write the report page to ``out``; return ``out``.

    Raises:
        SSLHubError: a path is not a run directory, or ``out`` cannot be written.
    """
    from threadpoolctl import threadpool_limits

    from sslhub.report.page import render_page
    from sslhub.report.rundir import load_run

    if not run_dirs:
        raise SSLHubError("give at least one run directory")
    runs = [load_run(Path(directory)) for directory in run_dirs]
    # One BLAS thread for the maps' SVDs (numpy's BLAS is loaded by now; tsne_2d limits the
    # runtimes scikit-learn loads later): these are small problems, and on a busy machine a
    # multithreaded BLAS's spinning threads made them ten times slower, not faster.
    with threadpool_limits(limits=1):
        page = render_page(runs)
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # a temporary file then a rename: a reader never sees half a page (and no torch import for this)
        temporary = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        temporary.write_text(page, encoding="utf-8")
        os.replace(temporary, out)
    except OSError as exc:
        raise SSLHubError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    return out


__all__ = ["write_report"]
