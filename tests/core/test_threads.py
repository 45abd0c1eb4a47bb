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


def test_a_resumed_auto_run_keeps_the_thread_count_it_started_with(toy_catalog, tmp_path, monkeypatch):
    """Float sums depend on the thread count: a resume under another load must not pick a new one."""
    import json
    from pathlib import Path

    import torch
    import yaml

    from sslhub.engine import Run
    from sslhub.recipe import resolve_recipe
    from sslhub.recipe_yaml import load_recipe_text

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    data = yaml.safe_load((Path(__file__).resolve().parents[1] / "data" / "toy_recipe.yaml").read_text())
    recipe = resolve_recipe(load_recipe_text(yaml.safe_dump(data), "toy.yaml"), toy_catalog)
    assert recipe.train.threads == "auto"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr("sslhub.threads.automatic_threads", lambda: 2)
        (run_dir / "environment.json").write_text(json.dumps({"torch_threads": 1}))
        Run(recipe, run_dir, resume=True)
        assert torch.get_num_threads() == 1  # the recorded count, not the load's 2
        Run(recipe, run_dir, resume=False)
        assert torch.get_num_threads() == 2  # a new run follows the load
        (run_dir / "environment.json").write_text(json.dumps({"torch_threads": True}))  # untrusted: ignored
        Run(recipe, run_dir, resume=True)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
