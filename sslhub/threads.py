"""How many CPU threads torch's operators get when a recipe leaves it to sslhub (``train.threads: auto``).

Intra-op threads that have to wait for a core another process holds make every small operator
wait for the slowest thread: on a busy 2-core machine, 40 SimCLR steps took 27-30 s with torch's
default of 2 threads against 2.1-2.4 s with 1 (``benchmarks/bench_threads.py`` measures it).
So the automatic choice counts only the cores that the load average says are free.
"""

from __future__ import annotations

import os

#: environment variables through which a launcher (torchrun sets OMP_NUM_THREADS=1) or a user
#: already decided the thread count; ``auto`` then leaves torch alone.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def automatic_threads(cpus: int | None = None, load: float | None = None) -> int:
    """The CPUs not already busy: ``cpus`` minus the one-minute load average, rounded, at least 1.

    Args:
        cpus: usable CPUs (default: :func:`usable_cpus`).
        load: runnable processes averaged over the last minute (default: ``os.getloadavg()``;
            0 where the platform has none).
    """
    cpus = usable_cpus() if cpus is None else cpus
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(cpus, round(cpus - load)))


def threads_for(setting: int | str | None) -> int | None:
    """The thread count to give ``torch.set_num_threads`` for a recipe's ``train.threads``; None to leave torch's.

    ``None`` keeps torch's default; an int is taken as it is; ``"auto"`` is
    :func:`automatic_threads`, unless a thread variable (:data:`THREAD_VARIABLES`) is set.
    """
    if setting is None:
        return None
    if setting == "auto":
        if any(os.environ.get(name) for name in THREAD_VARIABLES):
            return None
        return automatic_threads()
    return int(setting)
