"""``sslhub run --dry-run``: a few steps, timed warm, with the model's size and peak memory."""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

import torch

from sslhub.recipe import TrainSpec
from sslhub.resume import TrainingState
from sslhub.training import LoopParts, autocast
from sslhub.training_data import make_views

#: steps timed after the first: the first pays for lazy initialisation, allocator warm-up and caches.
WARM_STEPS = 3


def dry_run_report(
    parts: LoopParts, state: TrainingState, spec: TrainSpec, device: torch.device, train_samples: int
) -> dict[str, Any]:
    """Run a first and a few warm steps; report what a step takes. Nothing is saved."""
    module = parts.module
    num_views = max(o.num_views for o in module.objectives)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for _ in range(1 + WARM_STEPS):
        elapsed, loss = _timed_step(parts, spec, device, num_views)
        seconds.append(elapsed)
    report = {
        "dry_run": True,
        "device": str(device),
        "train_samples": train_samples,
        "encoder_parameters": sum(p.numel() for p in module.encoder.parameters()),
        "objective_parameters": {
            name: sum(p.numel() for p in o.parameters())
            for name, o in zip(module.names, module.objectives, strict=True)
        },
        "loss": round(float(loss.item()), 6),
        "first_step_seconds": round(seconds[0], 4),
        "step_seconds": round(statistics.median(seconds[1:]), 4),
        "views": num_views,
    }
    if device.type == "cuda":
        report["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    else:
        with contextlib.suppress(Exception):
            import resource

            report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return report


def _timed_step(parts: LoopParts, spec: TrainSpec, device: torch.device, num_views: int) -> tuple[float, torch.Tensor]:
    """One forward, backward and optimizer step on the next batch: its seconds and loss."""
    start = time.perf_counter()
    batch = next(parts.batches)
    views = make_views(parts.augment, batch, num_views, spec.channels_last)
    with autocast(spec, device):
        loss, _ = parts.model(views, parts.module.active_at(0))
    parts.trainables.scaler.scale(loss).backward()
    parts.trainables.scaler.step(parts.trainables.optimizer)
    parts.trainables.scaler.update()
    parts.trainables.optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, loss.detach()
