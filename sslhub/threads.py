"""How many CPU threads torch's operators get when a recipe leaves it to sslhub (``train.threads: auto``).

Intra-op threads that have to wait for a core another process holds make every small operator
wait for the slowest thread: on a busy 2-core machine, 40 SimCLR steps took 27-30 s with torch's
default of 2 threads against 2.1-2.4 s with 1 (``benchmarks/bench_threads.py`` measures it).
So the automatic choice counts only the cores that are free now: it watches the CPUs for a tenth of
a second (``/proc/stat``) rather than read the one-minute load average, which still counts work
that has just finished (on an idle 2-core machine a minute after a test run it chose 1 thread where
2 were 1.5x faster; benchmarks/RESULTS.md).
"""

from __future__ import annotations

import os
import time

#: environment variables through which a launcher (torchrun sets OMP_NUM_THREADS=1) or a user
#: already decided the thread count; ``auto`` then leaves torch alone.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: how long :func:`busy_cpus_now` watches the CPUs, in seconds
SAMPLE_SECONDS = 0.1

#: where Linux counts each CPU state's time since boot
PROC_STAT = "/proc/stat"


def _cpu_times(path: str = PROC_STAT) -> tuple[int, int] | None:
    """(busy, total) CPU time of all CPUs from ``path``'s ``cpu`` line; None where it cannot be read.

    Idle and waiting for I/O count as free; steal time (a hypervisor giving the CPU to another
    machine) counts as busy, since this process cannot have it either.
    """
    try:
        with open(path) as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(value) for value in fields[1:9])
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return total - idle - iowait, total


def busy_cpus_now(seconds: float = SAMPLE_SECONDS, path: str = PROC_STAT) -> float | None:
    """How many of the machine's CPUs other work kept busy over the next ``seconds``; None without ``path``."""
    before = _cpu_times(path)
    if before is None:
        return None
    time.sleep(seconds)
    after = _cpu_times(path)
    if after is None or after[1] <= before[1]:
        return None
    share = (after[0] - before[0]) / (after[1] - before[1])
    return share * (os.cpu_count() or 1)


def one_minute_load() -> float:
    """Runnable processes averaged over the last minute; 0 where the platform has no load average."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def automatic_threads(cpus: int | None = None, load: float | None = None) -> int:
    """The CPUs not already busy: ``cpus`` minus ``load``, rounded, at least 1.

    Args:
        cpus: usable CPUs (default: :func:`usable_cpus`).
        load: CPUs other work keeps busy (default: :func:`busy_cpus_now`, or where the platform
            has no ``/proc/stat`` the one-minute load average).
    """
    cpus = usable_cpus() if cpus is None else cpus
    if load is None:
        load = busy_cpus_now()
    if load is None:
        load = one_minute_load()
    return max(1, min(cpus, round(cpus - load)))


def launcher_set_threads() -> bool:
    """Whether a launcher or the user set a thread variable (:data:`THREAD_VARIABLES`), which ``auto`` then follows."""
    return any(os.environ.get(name) for name in THREAD_VARIABLES)


def threads_for(setting: int | str | None) -> int | None:
    """The thread count to give ``torch.set_num_threads`` for a recipe's ``train.threads``; None to leave torch's.

    ``None`` keeps torch's default; an int is taken as it is; ``"auto"`` is
    :func:`automatic_threads`, unless a thread variable (:data:`THREAD_VARIABLES`) is set.
    """
    if setting is None:
        return None
    if setting == "auto":
        return None if launcher_set_threads() else automatic_threads()
    return int(setting)
