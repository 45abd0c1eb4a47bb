"""``sslhub run --dry-run``: one step, timed, with the model's size and peak memory."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch

from sslhub.recipe import TrainSpec
from sslhub.resume import TrainingState
from sslhub.training import LoopParts, autocast
from sslhub.training_data import make_views


def dry_run_report(
    parts: LoopParts, state: TrainingState, spec: TrainSpec, device: torch.device, train_samples: int
) -> dict[str, Any]:
    """Run one forward, backward and optimizer step; report what it took. Nothing is saved."""
    module, scaler = parts.module, parts.trainables.scaler
    num_views = max(o.num_views for o in module.objectives)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    batch = next(parts.batches)
    views = make_views(parts.augment, batch, num_views, spec.channels_last)
    with autocast(spec, device):
        loss, _ = parts.model(views, module.active_at(0))
    scaler.scale(loss).backward()
    scaler.step(parts.trainables.optimizer)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
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
        "step_seconds": round(elapsed, 4),
        "views": num_views,
    }
    if device.type == "cuda":
        report["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    else:
        with contextlib.suppress(Exception):
            import resource

            report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return report
