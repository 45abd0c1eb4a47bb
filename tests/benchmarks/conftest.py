"""Fixtures for the tests of ``benchmarks/``: its modules imported by name, offline."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def benchmark_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], ModuleType]]:
    """``benchmark_module("run_all")`` imports ``benchmarks/run_all.py``; torch's thread count is
    restored afterwards, because the runs set the recipe's thread count process-wide."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    yield importlib.import_module
    torch.set_num_threads(threads)
