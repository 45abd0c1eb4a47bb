"""No host-device synchronisation inside a shipped recipe's training step.

A sync in the augmentations, forward or backward (``.item()``, ``bool(tensor)``, a
boolean-mask index, ``nonzero``) makes the CPU wait for the GPU mid-step, so it can no
longer queue work ahead. The engine's own one sync per step (loss and gradient norm read
together, after backward) is outside what is checked here.

Two detectors: on every device, a dispatch mode that flags the aten operations that need a
value or a shape from the device (it runs on the CPU too, so CI checks it); on CUDA also
``torch.cuda.set_sync_debug_mode("error")``, which catches every other kind of sync.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch
from gpu_device import GPU_DEVICE
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader

from sslhub.cli import load_and_resolve
from sslhub.engine import Run
from sslhub.optim import build_optimizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted(path.stem for path in (REPO / "recipes").glob("*.yaml"))

#: recipes that sync on purpose, and why (the test fails if one stops, so this list stays true)
KNOWN_SYNCS = {
    "text_mlm": "mlm decodes only the selected positions: a boolean-mask index, whose size the host must read; "
    "and the sdpa mask check (see text_contrastive)",
    "image_text_clip": "its mlm objective on the captions (see text_mlm)",
    "audio_masked": "masked_audio predicts only the masked frames: a boolean-mask index",
    "audio_wav2vec2": "wav2vec2 quantizes and contrasts only the masked frames: a boolean-mask index",
    "text_contrastive": "transformers' sdpa mask builder reads padding_mask.all() back to skip the mask "
    "(masking_utils._ignore_bidirectional_mask_sdpa); unpacked short texts always carry padding",
}

#: recipes that read a value back on the CPU only, where it costs no wait; on an accelerator they are checked
CPU_ONLY_SYNCS = {
    "text_causal_lm": "split_contrastive trims the halves' all-padding columns on the CPU only (trim_padding_columns)",
}

#: aten operations whose result needs a value or a shape read back from the device
SYNCING_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "nonzero_static", "unique", "_unique2"}


class HostSyncs(TorchDispatchMode):
    """Records the syncing aten operations run while it is active."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNCING_OPS:
            self.found.append(name)
        elif name in ("index", "index_put", "index_put_") and any(
            isinstance(index, torch.Tensor) and index.dtype == torch.bool
            for index in (args[1] if len(args) > 1 and isinstance(args[1], list | tuple) else ())
        ):
            self.found.append(f"{name} with a boolean mask")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def cuda_sync_errors(device: torch.device):
    if device.type != "cuda":
        yield
        return
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def step_device_name() -> str:
    """The device the step runs on: the GPU the tests are given, else the CPU."""
    return GPU_DEVICE if torch.cuda.is_available() or not GPU_DEVICE.startswith("cuda") else "cpu"


def recipe_params() -> list:
    params = []
    on_cpu = step_device_name() == "cpu"
    for name in RECIPES:
        reason = KNOWN_SYNCS.get(name) or (CPU_ONLY_SYNCS.get(name) if on_cpu else None)
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.mark.parametrize("name", recipe_params())
def test_training_step_does_not_wait_for_the_device(name: str, tmp_path: Path):
    overrides = [f"train.device={step_device_name()}", "evaluate.enabled=false", "export=null", "train.batch_size=16"]
    recipe = load_and_resolve(REPO / "recipes" / f"{name}.yaml", overrides, [])
    builder = Run(recipe, tmp_path / "run", show_progress=False)
    device = builder.device
    modality = builder.components.modality()
    encoders = builder.components.encoders(modality)
    objectives = builder.components.objectives(modality, encoders)
    augment = builder.components.augmentations(modality)
    module = builder.components.training_module(encoders, objectives).to(device)
    optimizer = build_optimizer(module, recipe.train.optimizer)
    loader = DataLoader(modality.train_dataset(), batch_size=16, collate_fn=modality.collate)
    batch = modality.on_device({k: v.to(device) for k, v in next(iter(loader)).items()})
    num_views = max(o.num_views for o in objectives)
    every_objective = module.active_at(max(o.start_step for o in recipe.objectives))

    def augment_forward_backward() -> None:
        views = [augment(dict(batch)) for _ in range(num_views)]
        loss, _ = module(views, every_objective)
        loss.backward()

    module.train()
    augment_forward_backward()  # the first step may sync once for lazy setup (cuBLAS handles, caches)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    detector = HostSyncs()
    with cuda_sync_errors(device), detector:
        augment_forward_backward()
    assert not detector.found, f"{name}: syncing operations in the step: {sorted(set(detector.found))}"
