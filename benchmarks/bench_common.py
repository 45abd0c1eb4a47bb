"""Shared pieces of the benchmarks: one result row, peak-memory measurement, the machine, the table.

Every benchmark compares *ours* with a *baseline* measured in the same process run, and
reports ratios, never absolute timings alone:

- ``ratio`` = ours / the baseline, turned so that above 1 means ours is better: for a time
  (ms/step) the baseline's time / ours, for a rate (samples/s) or an accuracy ours / theirs;
- ``peak mem ratio`` = our peak memory / the baseline's peak, so below 1 means ours uses less.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` above what was allocated at the
start; on the CPU (Linux), the process's peak resident set size (``VmHWM``, reset through
``/proc/self/clear_refs`` and after ``malloc_trim``) above the resident size at the start.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent

MEMORY_MEASURE = {
    "cuda": "torch.cuda.max_memory_allocated above the start",
    "cpu": "peak RSS above the start (Linux VmHWM reset via /proc/self/clear_refs, after malloc_trim)",
}


@dataclass
class Result:
    """One row of the benchmark table.

    Args:
        benchmark: what was compared, e.g. ``engine image_simclr``.
        ours: our figure, in ``unit``.
        baseline: the baseline's figure, in ``unit``.
        unit: e.g. ``ms/step``, ``views/s``, ``accuracy``.
        higher_is_better: whether a larger figure in ``unit`` is better (a rate) or worse (a time).
        baseline_name: what the baseline is, in words.
        target: the least acceptable ``ratio`` (None: reported, no target).
        memory_ratio: our peak memory / the baseline's (None: not measured).
        memory_target: the largest acceptable memory ratio (None: no target).
        details: anything else worth keeping in the JSON (every round's figures, settings).
    """

    benchmark: str
    ours: float
    baseline: float
    unit: str
    higher_is_better: bool
    baseline_name: str = ""
    target: float | None = None
    memory_ratio: float | None = None
    memory_target: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Ours / the baseline, turned so that above 1 means ours is better on this row's unit."""
        if self.ours <= 0 or self.baseline <= 0:
            return math.nan
        return self.ours / self.baseline if self.higher_is_better else self.baseline / self.ours

    @property
    def verdict(self) -> str:
        """``meets`` / ``misses`` the targets, or ``info`` where the row has none."""
        if self.target is None and self.memory_target is None:
            return "info"
        missed = []
        if self.target is not None and not self.ratio >= self.target:
            missed.append("speed")
        if self.memory_target is not None and self.memory_ratio is not None and self.memory_ratio > self.memory_target:
            missed.append("memory")
        return "meets" if not missed else "misses " + "+".join(missed)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "verdict": self.verdict}


def display_path(path: Path) -> str:
    """``path`` relative to the repository where it lies inside it (for portable JSON)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def logged_step_time(records: Sequence[dict[str, Any]], warmup: int, samples_per_step: int) -> tuple[float, int]:
    """``(seconds, steps)`` of training after step ``warmup``, from the engine's ``metrics.jsonl`` records.

    Each record's ``samples_per_s`` covers the steps since the previous record, so the windows
    after the warm-up one add up to the timed steps.
    """
    seconds, steps, previous = 0.0, 0, warmup
    for record in records:
        if record["step"] <= warmup:
            continue
        window = record["step"] - previous
        seconds += window * samples_per_step / record["samples_per_s"]
        steps += window
        previous = record["step"]
    return seconds, steps


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def synchronize(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_device(device: str) -> None:
    """Exit with a message when ``cuda`` is asked for and there is none."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: no CUDA device is available here")


# -- peak memory ----------------------------------------------------------------------


def _proc_status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _release_freed_cpu_memory() -> None:
    """Return freed heap pages to the OS, so one measurement does not inherit the previous one's."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_cpu_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")  # 5: reset the peak resident set size (VmHWM) to the current one
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory (bytes) above the level at entry, on ``device``; ``peak`` is None where not measurable."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.peak: int | None = None
        self._start: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            _release_freed_cpu_memory()
            self._start = _proc_status_bytes("VmRSS") if _reset_cpu_peak() else None
        return self

    def __exit__(self, *exc_info) -> None:
        if self._start is None:
            return
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._start
        else:
            high_water = _proc_status_bytes("VmHWM")
            self.peak = None if high_water is None else max(0, high_water - self._start)


def memory_ratio(ours: Sequence[int | None], baseline: Sequence[int | None]) -> float | None:
    """Median of our peaks / median of the baseline's; None when either was not measured."""
    ours_known = [value for value in ours if value is not None]
    baseline_known = [value for value in baseline if value is not None]
    if not ours_known or not baseline_known or median(baseline_known) <= 0:
        return None
    return median(ours_known) / median(baseline_known)


# -- alternating measurement -------------------------------------------------------------


def alternate(
    sides: dict[str, Callable[[], Any]], rounds: int, on_result: Callable[[str, Any], None] | None = None
) -> dict[str, list[Any]]:
    """Run each side once per round, reversing the order every other round; every result by side.

    Alternating puts both sides under the same (shared, changing) machine load, and the
    reversed order cancels whatever the first runner of a round pays or leaves behind.
    """
    names = list(sides)
    results: dict[str, list[Any]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            value = sides[name]()
            results[name].append(value)
            if on_result is not None:
                on_result(name, value)
    return results


# -- the machine and the table -----------------------------------------------------------


def machine_description(device: str) -> dict[str, Any]:
    """CPU model, core count, load average, versions and the GPU, for the record."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    description: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "load_average_1_5_15": [round(value, 2) for value in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        description["gpu"] = torch.cuda.get_device_name(torch.device(device))
        description["gpu_count"] = torch.cuda.device_count()
    description["memory_measure"] = MEMORY_MEASURE["cuda" if device.startswith("cuda") else "cpu"]
    return description


def _figure(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


TABLE_COLUMNS = ("benchmark", "ours", "baseline", "unit", "ratio", "target", "peak mem ratio", "verdict")


def table_rows(results: Sequence[Result]) -> list[list[str]]:
    rows = []
    for result in results:
        target = "-" if result.target is None else f">= {result.target:.2f}"
        if result.memory_target is not None:
            target += f", mem <= {result.memory_target:.2f}"
        rows.append(
            [
                result.benchmark,
                _figure(result.ours),
                _figure(result.baseline),
                result.unit,
                f"{result.ratio:.3f}",
                target,
                "-" if result.memory_ratio is None else f"{result.memory_ratio:.3f}",
                result.verdict,
            ]
        )
    return rows


def format_table(results: Sequence[Result], markdown: bool = False) -> str:
    """The results as an aligned text table, or as a Markdown table."""
    rows = table_rows(results)
    if markdown:
        lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(cell)) for cell in column) for column in zip(TABLE_COLUMNS, *rows, strict=True)]
    numeric = {1, 2, 4, 6}
    lines = []
    for row in [list(TABLE_COLUMNS), *rows]:
        cells = [
            cell.rjust(width) if index in numeric else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def write_json(path: Path, results: Sequence[Result], machine: dict[str, Any], settings: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine, "settings": settings, "results": [result.to_dict() for result in results]}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op threads for the block (None: leave them)."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
