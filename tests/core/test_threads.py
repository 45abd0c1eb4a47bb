"""The automatic thread count counts only the CPUs free now and yields to launchers' thread variables."""

from __future__ import annotations

import pytest

from sslhub import threads
from sslhub.recipe import TrainSpec
from sslhub.threads import automatic_threads, busy_cpus_now, threads_for


@pytest.mark.parametrize(
    ("cpus", "load", "expected"),
    [(2, 0.0, 2), (2, 1.2, 1), (2, 4.5, 1), (16, 3.4, 13), (16, 0.3, 16), (1, 0.0, 1)],
)
def test_automatic_threads_are_the_cpus_the_load_leaves_free(cpus, load, expected):
    assert automatic_threads(cpus, load) == expected


def write_stat(path, busy: int, idle: int, steal: int = 0) -> None:
    """A ``/proc/stat`` whose ``cpu`` line holds ``busy`` user, ``idle`` idle and ``steal`` stolen ticks."""
    path.write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 {steal} 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n")


def test_busy_cpus_are_the_non_idle_share_of_the_cpu_time_in_the_window(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    write_stat(stat, busy=1000, idle=1000)
    ticks = iter([(300, 200), (0, 400, 100)])  # a window 60% busy, then one idle but for stolen time

    def tick(seconds):
        numbers = next(ticks)
        write_stat(stat, 1000 + numbers[0], 1000 + numbers[1], numbers[2] if len(numbers) > 2 else 0)

    monkeypatch.setattr(threads.time, "sleep", tick)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    assert busy_cpus_now(path=str(stat)) == pytest.approx(4 * 300 / 500)
    write_stat(stat, busy=1000, idle=1000)
    assert busy_cpus_now(path=str(stat)) == pytest.approx(4 * 100 / 500)  # steal counts as busy


def test_without_proc_stat_the_load_average_decides(tmp_path, monkeypatch):
    assert busy_cpus_now(path=str(tmp_path / "missing")) is None
    monkeypatch.setattr(threads, "busy_cpus_now", lambda: None)
    monkeypatch.setattr(threads, "one_minute_load", lambda: 1.2)
    assert automatic_threads(cpus=2) == 1


def test_a_process_spinning_on_a_core_is_seen_busy(monkeypatch):
    """The measure the default rests on, on the real ``/proc/stat`` (where Linux has one)."""
    import subprocess
    import sys
    import time

    if threads._cpu_times() is None:
        pytest.skip("needs Linux's /proc/stat")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        spinning = busy_cpus_now(seconds=0.3)
    finally:
        spinner.kill()
        spinner.wait()
    assert spinning is not None and spinning >= 0.7  # the spinner holds a core, whatever else runs


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
