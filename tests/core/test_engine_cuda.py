"""The engine on a GPU: precisions, channels_last + compile, exact resume, DDP over NCCL.

Skipped without a CUDA device (see ``tests/gpu_device.py``); the CPU versions of these
checks are in test_engine.py and test_engine_options.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from gpu_device import GPU_DEVICE, ON_CUDA, cuda_count, needs_gpu
from toy_runs import BLOCK_BUILTINS, RECIPE, final_weights, sslhub, sslhub_env, torchrun_command, toy_run_command

from sslhub.testing import run_recipe_for_steps

REPO = Path(__file__).resolve().parents[2]

pytestmark = needs_gpu


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_toy_recipe_learns_on_the_device_in_each_precision(toy_catalog, precision, tmp_path):
    recipe = yaml.safe_load(RECIPE.read_text())
    overrides = {"train.device": GPU_DEVICE, "train.precision": precision}
    summary = run_recipe_for_steps(recipe, 40, catalog=toy_catalog, out=tmp_path / "run", overrides=overrides)
    losses = summary["losses"]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1, losses
    environment = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert environment["device"].split(":")[0] == GPU_DEVICE.split(":")[0]


def test_image_recipe_learns_with_bf16_channels_last_and_compile():
    """The GPU fast path of PERFORMANCE.md, all three switched on from the recipe."""
    overrides = {
        "train.device": GPU_DEVICE,
        "train.precision": "bf16",
        "train.channels_last": True,
        "train.compile": True,
        "train.batch_size": 64,
    }
    summary = run_recipe_for_steps(REPO / "recipes" / "image_simclr.yaml", 40, overrides=overrides)
    losses = summary["losses"]
    assert all(loss == loss for loss in losses), losses  # no NaN
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2, losses


def test_resumed_run_on_the_device_ends_with_the_uninterrupted_weights(tmp_path):
    common = ["--set", f"train.device={GPU_DEVICE}", "--set", "evaluate.enabled=false", "--set", "train.warmup=0"]
    common += ["--set", "train.schedule=constant", "--set", "train.checkpoint_every=4"]
    whole = sslhub(*toy_run_command(tmp_path / "whole", "--set", "train.steps=8", *common)[3:])
    assert whole.returncode == 0, whole.stderr[-3000:]
    first = sslhub(*toy_run_command(tmp_path / "parts", "--set", "train.steps=4", *common)[3:])
    assert first.returncode == 0, first.stderr[-3000:]
    rest = sslhub(
        "run", str(RECIPE), "-p", "toy_plugin", *BLOCK_BUILTINS, "--resume", str(tmp_path / "parts"),
        "--set", "train.steps=8", *common,
    )  # fmt: skip
    assert rest.returncode == 0, rest.stderr[-3000:]
    a, b = final_weights(tmp_path / "whole"), final_weights(tmp_path / "parts")
    assert a.keys() == b.keys()
    for key in a:
        # GPU kernels may reorder float sums between launches; the RNG streams must still agree.
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.skipif(not ON_CUDA or cuda_count() < 2, reason="needs two CUDA devices (NCCL)")
def test_two_gpus_over_nccl_match_one_gpu(tmp_path):
    """2 ranks x 32 under torchrun with NCCL equal 1 GPU x 64 (no augmentation, no dropout)."""
    common = ["--set", "augment=[]", "--set", "train.steps=6", "--set", "evaluate.enabled=false"]
    common += ["--set", "train.checkpoint_every=6", "--set", "train.device=cuda"]
    single = sslhub(*toy_run_command(tmp_path / "single", "--set", "train.batch_size=64", *common)[3:])
    assert single.returncode == 0, single.stderr[-3000:]
    command = torchrun_command()
    command += toy_run_command(tmp_path / "ddp", "--set", "train.batch_size=32", *common)[1:]
    ddp = subprocess.run(command, capture_output=True, text=True, env=sslhub_env(), timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a, b = final_weights(tmp_path / "single"), final_weights(tmp_path / "ddp")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4, msg=key)


def test_a_cpu_run_on_a_gpu_machine_opens_no_cuda_context(tmp_path):
    """Checkpoints save the run device's RNG only: a CPU run (a gloo rank, say) must not touch the GPUs."""
    script = (
        "import sys, torch; from sslhub.cli import main; "
        "code = main(sys.argv[1:]); print('cuda initialized:', torch.cuda.is_initialized()); sys.exit(code)"
    )
    command = [sys.executable, "-c", script, *toy_run_command(tmp_path / "run", "--set", "train.steps=4")[3:]]
    command += ["--set", "train.device=cpu", "--set", "evaluate.enabled=false", "--set", "train.checkpoint_every=2"]
    result = subprocess.run(command, capture_output=True, text=True, env=sslhub_env(), timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cuda initialized: False" in result.stdout
