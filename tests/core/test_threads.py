"""The automatic thread count counts only free CPUs and yields to launchers' thread variables."""

from __future__ import annotations

import pytest

from sslhub.recipe import TrainSpec
from sslhub.threads import automatic_threads, threads_for


@pytest.mark.parametrize(
    ("cpus", "load", "expected"),
    [(2, 0.0, 2), (2, 1.2, 1), (2, 4.5, 1), (16, 3.4, 13), (16, 0.3, 16), (1, 0.0, 1)],
)
def test_automatic_threads_are_the_cpus_the_load_leaves_free(cpus, load, expected):
    assert automatic_threads(cpus, load) == expected


def test_auto_yields_to_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads_for("auto") is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert threads_for("auto") >= 1


def test_explicit_and_null_settings():
    assert threads_for(3) == 3
    assert threads_for(None) is None


def test_recipe_default_is_auto_and_other_words_are_refused():
    assert TrainSpec().threads == "auto"
    assert TrainSpec(threads=2).threads == 2
    with pytest.raises(ValueError):
        TrainSpec(threads="many")
    with pytest.raises(ValueError):
        TrainSpec(threads=0)
