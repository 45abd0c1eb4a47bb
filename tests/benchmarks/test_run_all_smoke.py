"""Smoke test of ``benchmarks/run_all.py``: one tiny engine comparison and one ONNX comparison.

It checks that the command produces the rows with positive, finite ratios and writes them
as JSON; it asserts nothing about timings (those depend on the machine and its load).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def run_all(benchmark_module):
    return benchmark_module("run_all")


def test_quick_run_prints_and_writes_a_row_per_comparison(run_all, tmp_path: Path, capsys):
    out = tmp_path / "results.json"
    code = run_all.main(
        [
            "--quick",
            "--only",
            "engine:autoencoder_image,onnx:image_simclr",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--rounds",
            "1",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    payload = json.loads(out.read_text())
    rows = {row["benchmark"]: row for row in payload["results"]}
    assert set(rows) == {
        "engine autoencoder_image",
        "onnx image_simclr (SmallCNN) batch 1",
        "onnx image_simclr (SmallCNN) batch 32",
    }
    for name, row in rows.items():
        assert name in printed
        assert row["ours"] > 0 and row["baseline"] > 0
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0
    engine = rows["engine autoencoder_image"]
    assert engine["unit"] == "ms/step" and engine["details"]["timed_steps"] == 2
    assert engine["memory_ratio"] is None or engine["memory_ratio"] > 0
    assert payload["machine"]["device"] == "cpu"


def test_only_rejects_an_unknown_benchmark(run_all):
    with pytest.raises(SystemExit, match="no benchmark 'engine:nope'"):
        run_all.main(["--only", "engine:nope"])


def test_ratio_is_turned_so_that_above_one_means_ours_is_better(run_all):
    from bench_common import Result

    time_row = Result("t", ours=100.0, baseline=110.0, unit="ms/step", higher_is_better=False, target=1 / 1.03)
    rate_row = Result("r", ours=50.0, baseline=200.0, unit="views/s", higher_is_better=True, target=1.0)
    assert time_row.ratio == pytest.approx(1.1) and time_row.verdict == "meets"
    assert rate_row.ratio == pytest.approx(0.25) and rate_row.verdict == "misses speed"
    heavy = Result("m", 1.0, 1.0, "ms/step", False, target=0.97, memory_ratio=1.2, memory_target=1.1)
    assert heavy.verdict == "misses memory"
    assert Result("i", 1.0, 2.0, "accuracy", True).verdict == "info"


def test_peer_comparison_is_skipped_with_a_message_without_lightly(run_all, monkeypatch, capsys):
    import bench_lightly

    monkeypatch.setattr(bench_lightly, "lightly_available", lambda: False)
    assert bench_lightly.compare_lightly(epochs=1) == []
    assert "pip install -e .[bench]" in capsys.readouterr().err


def test_input_pipeline_row_in_the_gpu_variants_runs_on_the_cpu(run_all, tmp_path: Path):
    # bf16 + channels_last are among the --device cuda defaults; on the CPU they take the same code path.
    out = tmp_path / "results.json"
    argv = ["--only", "input:image_simclr", "--variants", "bf16+channels_last"]
    code = run_all.main([*argv, "--steps", "2", "--warmup", "1", "--rounds", "1", "--json", str(out)])
    assert code == 0
    (row,) = json.loads(out.read_text())["results"]
    assert row["benchmark"] == "input pipeline image_simclr [bf16+channels_last]"
    assert row["details"]["variant"] == "bf16+channels_last" and row["details"]["premade_pool_steps"] > 0
    assert math.isfinite(row["ratio"]) and row["ratio"] > 0
    assert row["verdict"] == "info"  # the 90% target applies on a GPU only


def test_gpu_sized_recipes_run_only_on_a_gpu_or_when_named(run_all):
    plan = dict.fromkeys(["engine:image_simclr", "engine:simclr_resnet18_cifar", "input:simclr_resnet18_cifar"])
    assert run_all.select(plan, None) == ["engine:image_simclr"]
    assert run_all.select(plan, "engine") == ["engine:image_simclr"]
    assert run_all.select(plan, None, cuda=True) == list(plan)
    assert run_all.select(plan, "engine:simclr_resnet18_cifar") == ["engine:simclr_resnet18_cifar"]


def test_gpu_anchor_recipe_builds_and_steps(run_all):
    from bench_engine import recipe_path

    from sslhub.testing import run_recipe_for_steps

    path = recipe_path("simclr_resnet18_cifar")
    assert path.parent.name == "recipes" and path.parent.parent == BENCHMARKS
    summary = run_recipe_for_steps(path, 2, overrides={"train.batch_size": 8})
    assert summary["steps"] == 2 and all(math.isfinite(loss) for loss in summary["losses"])


def test_gpu_session_stages_name_only_existing_benchmarks(run_all):
    import re
    import subprocess

    script = BENCHMARKS / "gpu_session.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "run_all.ENGINE_RECIPES" in re.search(r"^SIX=(.+)$", text, re.MULTILINE).group(1)
    six = ",".join("engine:" + recipe for recipe in run_all.ENGINE_RECIPES)
    plan = run_all.benchmark_plan(run_all.parse_args(["--device", "cuda"]), run_all.QUICK)
    onlies = [six if value == '"$SIX"' else value for value in re.findall(r"--only (\S+)", text)]
    assert len(onlies) == 4
    for only in onlies:
        assert run_all.select(plan, only, cuda=True), only  # an unknown name raises SystemExit
    from bench_engine import variant_overrides

    for variants in re.findall(r"--variants (\S+)", text):
        for variant in variants.split(","):
            variant_overrides(variant)  # an unknown part raises SystemExit


def test_gpu_session_all_stage_keeps_inside_its_deadline_and_packs_its_output(tmp_path):
    """With no time budget, ``all`` starts no stage, says so, and still returns its two files."""
    import os
    import subprocess
    import tarfile

    env = {**os.environ, "GPU_SESSION_BUDGET_S": "0"}
    done = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_session.sh"), "all", str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    summary = (tmp_path / "summary.md").read_text()
    for stage in ("tests", "anchor", "engine", "compile", "rest"):
        assert f"stage {stage}: not started" in summary
    with tarfile.open(tmp_path / "gpu-session.tgz") as packed:
        assert "./stages.txt" in packed.getnames()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-session.tgz", "summary.md"]
