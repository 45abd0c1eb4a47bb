"""The training engine, driven through the real ``sslhub`` command with the toy plugin."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from toy_runs import BLOCK_BUILTINS, RECIPE, final_weights, sslhub, sslhub_env, torchrun_command, toy_run_command


def run_toy(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(toy_run_command(out, *extra), capture_output=True, text=True, env=sslhub_env(), timeout=240)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    result = run_toy(out)
    assert result.returncode == 0, result.stderr
    return out


def test_toy_recipe_learns_and_beats_random_init(reference_run: Path):
    losses = [json.loads(line)["loss"] for line in (reference_run / "metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3
    report = json.loads((reference_run / "evaluation.json").read_text())
    assert report["trained"]["knn_accuracy"] > report["random_init"]["knn_accuracy"] + 0.1
    assert report["trained"]["linear_probe_accuracy"] > report["random_init"]["linear_probe_accuracy"] + 0.1
    probe_keys = {"knn_accuracy", "linear_probe_accuracy"}
    probe_keys |= {f"few_shot_{shots}_{figure}" for shots in (1, 5, 20) for figure in ("accuracy", "std")}
    assert set(report["trained"]) == set(report["random_init"]) == set(report["raw_input"]) == probe_keys
    assert report["trained"]["few_shot_20_accuracy"] > report["random_init"]["few_shot_20_accuracy"] + 0.1
    assert report["eval_split"] == {"train": 256, "test": 256}
    assert len(report["verdict"]) == 2 * 5  # random init and raw input, five probe scores each
    assert all(line.startswith("trained beats random init") for line in report["verdict"][:5])
    for name in ("recipe.yaml", "environment.json", "summary.json"):
        assert (reference_run / name).exists()
    environment = json.loads((reference_run / "environment.json").read_text())
    assert environment["data_fingerprint"] == "toy-512-16"
    assert any(p["name"] == "toy_plugin" for p in environment["plugins"])


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(reference_run: Path, tmp_path: Path):
    out = tmp_path / "run"
    command = toy_run_command(out, "--set", "train.checkpoint_every=7")
    process = subprocess.Popen(command, env=sslhub_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "checkpoints" / "manifest.json"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if manifest.exists() and json.loads(manifest.read_text() or '{"checkpoints": []}')["checkpoints"]:
            break
        time.sleep(0.02)
    process.kill()
    process.wait()
    steps = [c["step"] for c in json.loads(manifest.read_text())["checkpoints"]]
    assert steps and steps[-1] < 60, "the run should have been killed before it finished"
    # Leave debris like a kill during a write would: a half-written temporary file.
    (out / "checkpoints" / ".step_00000099.pt.tmp-1").write_bytes(b"partial")

    # No --set this time: a resumed run continues with the recipe saved in its directory.
    resumed = sslhub("run", str(RECIPE), "-p", "toy_plugin", *BLOCK_BUILTINS, "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(final_weights(out), final_weights(reference_run))
    logged_steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged_steps == sorted(set(logged_steps)), "metrics must not repeat steps after a resume"


@pytest.mark.slow
def test_corrupt_newest_checkpoint_is_skipped(reference_run: Path, tmp_path: Path):
    out = tmp_path / "run"
    first = run_toy(out, "--set", "train.steps=40")
    assert first.returncode == 0, first.stderr
    newest = out / "checkpoints" / "step_00000040.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    resumed = run_toy(out, "--resume", str(out), "--set", "train.steps=40")
    assert resumed.returncode == 0, resumed.stderr
    assert "skipping checkpoint" in resumed.stderr and "step_00000040.pt" in resumed.stderr
    assert "resumed from" in resumed.stderr and "step_00000020.pt" in resumed.stderr


def test_sigterm_saves_and_exits_143(tmp_path: Path):
    out = tmp_path / "run"
    command = toy_run_command(out, "--set", "train.steps=100000", "--set", "train.checkpoint_every=100000")
    process = subprocess.Popen(command, env=sslhub_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 0):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "SIGTERM received: saved checkpoint" in stderr
    assert "Traceback" not in stderr
    manifest = json.loads((out / "checkpoints" / "manifest.json").read_text())
    assert manifest["checkpoints"][-1]["step"] > 0


def test_nan_loss_stops_with_message(tmp_path: Path):
    result = run_toy(tmp_path / "run", "--set", "objectives.0.nan_at_step=5")
    assert result.returncode == 3
    assert "non-finite loss or gradient at step 5 from objective 'toy_contrastive'" in result.stderr
    assert "Traceback" not in result.stderr


def test_nan_loss_skip_step_policy_continues(tmp_path: Path):
    result = run_toy(
        tmp_path / "run",
        "--set",
        "objectives.0.nan_at_step=5",
        "--set",
        "train.nonfinite=skip_step",
        "--set",
        "train.steps=10",
        "--set",
        "evaluate.enabled=false",
    )
    assert result.returncode == 0, result.stderr
    assert "skipping step 5" in result.stderr


def test_dry_run_reports_sizes_and_time(tmp_path: Path):
    result = run_toy(tmp_path / "run", "--dry-run")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["encoder_parameters"] == 16 * 32 + 32 + 32 * 16 + 16
    assert report["step_seconds"] > 0 and report["first_step_seconds"] > 0 and report["views"] == 2
    assert not (tmp_path / "run").exists()  # a dry run leaves no run directory behind


def test_existing_run_dir_is_not_overwritten(reference_run: Path):
    result = run_toy(reference_run)
    assert result.returncode == 1
    assert "already holds a run; continue it with --resume" in result.stderr


def test_evaluate_command_rereads_run(reference_run: Path):
    result = sslhub("evaluate", str(reference_run), "-p", "toy_plugin", *BLOCK_BUILTINS)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    stored = json.loads((reference_run / "evaluation.json").read_text())
    assert report["trained"] == stored["trained"]
    # few-shot draws, probes and the baselines are deterministic for the recipe seed
    assert report["random_init"] == stored["random_init"] and report["raw_input"] == stored["raw_input"]


def test_evaluate_with_evaluation_overrides_writes_its_own_json(reference_run: Path):
    before = (reference_run / "evaluation.json").read_text()
    result = sslhub(
        "evaluate", str(reference_run), "-p", "toy_plugin", *BLOCK_BUILTINS,
        "--set", "evaluate.raw_baseline=false", "--set", "evaluate.few_shot=null", "--name", "no raw",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = reference_run / "evaluation-no_raw.json"
    assert f"wrote {written}" in result.stderr
    report = json.loads(written.read_text())
    assert json.loads(result.stdout) == report
    assert "raw_input" not in report and not any(key.startswith("few_shot") for key in report["trained"])
    stored = json.loads(before)
    assert "raw_input" in stored and report["trained"]["knn_accuracy"] == stored["trained"]["knn_accuracy"]
    assert (reference_run / "evaluation.json").read_text() == before  # the run's own evaluation is untouched


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--set", "train.steps=3", "--name", "x"], "error: --set train.steps=3: sslhub evaluate changes only evaluate.*"),
        (["--set", "evaluate.knn.k=3"], "error: --set writes evaluation-NAME.json beside the run's own evaluation.json: "
         "give it a --name"),
        (["--name", "x"], "error: --name applies to --data or --set only"),
    ],
)  # fmt: skip
def test_evaluate_refuses_overrides_it_cannot_honour(reference_run: Path, arguments: list[str], message: str):
    result = sslhub("evaluate", str(reference_run), "-p", "toy_plugin", *BLOCK_BUILTINS, *arguments)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(message) and "Traceback" not in result.stderr


def _torchrun(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = sslhub_env()
    env["OMP_NUM_THREADS"] = "1"
    command = torchrun_command()
    command += toy_run_command(out, *extra)[1:]  # drop the interpreter: torchrun runs "-m sslhub ..."
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path: Path):
    """Same global batch: 2 ranks x 32 under torchrun equals 1 process x 64 (no augmentation, no dropout)."""
    common = [
        "--set",
        "augment=[]",
        "--set",
        "train.steps=6",
        "--set",
        "evaluate.enabled=false",
        "--set",
        "train.checkpoint_every=6",
    ]
    single = run_toy(tmp_path / "single", "--set", "train.batch_size=64", *common)
    assert single.returncode == 0, single.stderr
    distributed = _torchrun(tmp_path / "ddp", "--set", "train.batch_size=32", *common)
    assert distributed.returncode == 0, distributed.stderr[-3000:]
    a, b = final_weights(tmp_path / "single"), final_weights(tmp_path / "ddp")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_process_resume_restores_each_ranks_augmentation_randomness(tmp_path: Path):
    """With augmentation noise drawn per rank, a resumed 2-process run ends with the uninterrupted weights."""
    common = ["--set", "evaluate.enabled=false", "--set", "train.checkpoint_every=4", "--set", "train.batch_size=32"]
    common += ["--set", "train.schedule=constant", "--set", "train.warmup=0"]  # the same lr with 4 or 8 steps
    whole = _torchrun(tmp_path / "whole", "--set", "train.steps=8", *common)
    assert whole.returncode == 0, whole.stderr[-3000:]
    first = _torchrun(tmp_path / "parts", "--set", "train.steps=4", *common)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (tmp_path / "parts" / "checkpoints" / "rng" / "step_00000004.rank1.pt").is_file()
    rest = _torchrun(tmp_path / "parts", "--resume", str(tmp_path / "parts"), "--set", "train.steps=8", *common)
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert "no saved RNG state" not in rest.stderr
    assert_same_weights(final_weights(tmp_path / "whole"), final_weights(tmp_path / "parts"))


@pytest.mark.slow
def test_an_unreadable_rank_rng_file_is_reported_and_the_run_continues(tmp_path: Path):
    common = ["--set", "evaluate.enabled=false", "--set", "train.checkpoint_every=2", "--set", "train.batch_size=32"]
    first = _torchrun(tmp_path / "run", "--set", "train.steps=2", *common)
    assert first.returncode == 0, first.stderr[-3000:]
    (tmp_path / "run" / "checkpoints" / "rng" / "step_00000002.rank1.pt").write_bytes(b"not a torch file")
    rest = _torchrun(tmp_path / "run", "--resume", str(tmp_path / "run"), "--set", "train.steps=4", *common)
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert "cannot read" in rest.stderr and "no saved RNG state of rank 1 for step 2" in rest.stderr


@pytest.mark.slow
def test_a_failing_torch_compile_is_one_message_naming_the_switch(tmp_path: Path):
    # No C++ compiler for inductor's CPU code: what a machine without build tools gives.
    result = sslhub(
        *toy_run_command(tmp_path / "run", "--set", "train.compile=true", "--set", "train.steps=2")[3:],
        # A fresh inductor cache, so no earlier compilation of the toy model can be reused.
        env={"CXX": str(tmp_path / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")},
    )
    assert result.returncode != 0
    assert "torch.compile failed (train.compile: true)" in result.stderr
    assert "--set train.compile=false" in result.stderr
    assert "Traceback" not in result.stderr
