"""The one training loop every recipe runs through."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import platform
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from sslhub import distributed
from sslhub.checkpoint import CheckpointStore, atomic_write_bytes, remove_stale_temp_files
from sslhub.components import (
    Batch,
    BuildContext,
    Encoder,
    EncoderSet,
    EvalSplit,
    Modality,
    Objective,
    named_encoders,
)
from sslhub.errors import CheckpointError, NonFiniteLossError, RunInterrupted, SSLHubError
from sslhub.evaluation import EvaluationSetup, evaluate_run
from sslhub.optim import build_optimizer, build_schedule
from sslhub.recipe import ResolvedRecipe
from sslhub.run_events import record_event
from sslhub.threads import threads_for

log = logging.getLogger("sslhub")

PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, sharded across ranks, that can start mid-epoch.

    Its own generator keeps the data order independent of the global RNG, so the
    position in the data is just ``(epoch, batches_done)`` in a checkpoint.
    """

    def __init__(self, size: int, seed: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.batch_size = size, seed, batch_size
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0
        self.per_rank = size // world_size

    def batches_per_epoch(self) -> int:
        return self.per_rank // self.batch_size

    def __iter__(self):
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        mine = order[self.rank : self.per_rank * self.world_size : self.world_size]
        usable = self.batches_per_epoch() * self.batch_size
        # Indices stay in one int64 array (8 bytes each) rather than a Python list (~36 bytes
        # each): with streamed corpora of tens of millions of samples that is the difference.
        return map(int, mine[self.start_batch * self.batch_size : usable].numpy())

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() * self.batch_size - self.start_batch * self.batch_size)


class TrainingModule(nn.Module):
    """Encoder plus objectives; ``forward`` returns the weighted total loss (what DDP wraps)."""

    def __init__(
        self,
        encoder: Encoder | EncoderSet,
        objectives: list[Objective],
        weights: list[float],
        starts: list[int],
        encoder_keys: list[str | None] | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.objectives = nn.ModuleList(objectives)
        self.weights, self.starts = weights, starts
        self.encoder_keys = encoder_keys or [None] * len(objectives)

    def encoder_for(self, index: int) -> Encoder | EncoderSet:
        key = self.encoder_keys[index]
        return self.encoder if key is None else self.encoder[key]

    def active_at(self, step: int) -> tuple[bool, ...]:
        """Which objectives train at ``step`` (``objectives[*].start_step``).

        ``forward`` takes this tuple rather than the step so that ``torch.compile`` guards
        on it: one graph until an objective joins, instead of a recompile for a dynamic step.
        """
        active = tuple(step >= start for start in self.starts)
        if not any(active):
            raise SSLHubError(f"no objective is active at step {step}: check objectives[*].start_step")
        return active

    def forward(self, views: list[Batch], active: tuple[bool, ...]) -> tuple[Tensor, dict[str, Any]]:
        total: Tensor | None = None
        logged: dict[str, Any] = {}
        for index, objective in enumerate(self.objectives):
            if not active[index]:
                continue
            output = objective(views[: objective.num_views], self.encoder_for(index))
            key = self._key(index, objective)
            logged[f"{key}/loss"] = output.loss.detach()
            for name, value in output.metrics.items():
                logged[f"{key}/{name}"] = value.detach() if isinstance(value, Tensor) else value
            weighted = output.loss.float() * self.weights[index]
            total = weighted if total is None else total + weighted
        if total is None:
            raise SSLHubError("no objective is active: check objectives[*].start_step")
        return total, logged

    def _key(self, index: int, objective: Objective) -> str:
        return getattr(objective, "sslhub_name", f"objective{index}")


@dataclass
class RunState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    skipped_in_a_row: int = 0
    elapsed: float = 0.0
    history: dict[str, list[float]] = field(default_factory=dict)


def select_device(requested: str) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise SSLHubError("train.device is cuda but no CUDA device is available; use device: auto or cpu")
    if requested == "cuda" and distributed.is_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(requested)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG a run draws from; on CUDA only ``device``'s generator.

    Asking for every GPU's state (``get_rng_state_all``) would open a CUDA context on each
    visible GPU from every rank, and a CPU run needs none.
    """
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(device)] if device.type == "cuda" else [],
    }


def restore_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(_tuples(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state[0], numpy_state[1].numpy(), *numpy_state[2:]))
    torch.set_rng_state(state["torch"])
    saved = state.get("cuda") or []
    if device.type == "cuda" and saved:
        # One state per checkpoint now; older checkpoints hold one per visible GPU.
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.set_rng_state(saved[0] if len(saved) == 1 else saved[min(index, len(saved) - 1)], device)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def _nonfinite_parameters(module: nn.Module) -> list[str]:
    """Names of the parameters holding NaN or infinity (one host sync for the whole module)."""
    named = [(name, p) for name, p in module.named_parameters() if p.is_floating_point()]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in named]).tolist()
    return [name for (name, _), ok in zip(named, finite, strict=True) if not ok]


def _to_float(value: Any) -> float:
    return float(value.item()) if isinstance(value, Tensor) else float(value)


class Run:
    """Builds a resolved recipe into components and trains, evaluates and exports it.

    Args:
        recipe: a validated recipe.
        run_dir: where everything is written; an existing run directory resumes.
        resume: continue from the newest good checkpoint in ``run_dir``.
    """

    def __init__(self, recipe: ResolvedRecipe, run_dir: Path, resume: bool = False, show_progress: bool | None = None):
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.train_spec = recipe.train
        self.is_main = distributed.is_main_process()
        self.show_progress = sys.stderr.isatty() if show_progress is None else show_progress
        self.device = select_device(self.train_spec.device)
        threads = threads_for(self.train_spec.threads)
        if threads is not None:
            torch.set_num_threads(threads)
        self.checkpoints = CheckpointStore(self.run_dir / "checkpoints", keep=self.train_spec.keep_checkpoints)
        self._signal: tuple[str, int] | None = None

    # -- building ----------------------------------------------------------------

    def build_modality(self) -> Modality:
        seed_everything(self.recipe.model.seed)
        context = BuildContext(
            modality_name=self.recipe.modality.component.name,
            run_dir=self.run_dir,
            seed=self.recipe.model.seed,
            device=self.device,
        )
        modality = self.recipe.modality.build(context)
        modality.prepare(self.run_dir)
        return modality

    def build_encoder(self, modality: Modality) -> Encoder | EncoderSet:
        """Deterministic in the seed, so the random-init baseline can be rebuilt at any time."""
        seed_everything(self.recipe.model.seed)
        context = self._context(modality)
        built = {}
        for key, resolved in self.recipe.encoders.items():
            encoder = resolved.build(context)
            built[key] = encoder
        if not self.recipe.several_encoders:
            return next(iter(built.values())).to(self.device)
        return EncoderSet(built).to(self.device)

    def encoder_keys(self) -> list[str | None]:
        """Per objective: the ``encoders:`` key it trains, or None for the whole encoder (set)."""
        return [o.encoder_key for o in self.recipe.objectives]

    def training_module(self, encoder: Encoder | EncoderSet, objectives: list[Objective]) -> TrainingModule:
        return TrainingModule(
            encoder,
            objectives,
            [o.weight for o in self.recipe.objectives],
            [o.start_step for o in self.recipe.objectives],
            self.encoder_keys(),
        ).to(self.device)

    def build_objectives(
        self, modality: Modality, encoder: Encoder | EncoderSet, prepare: bool = True
    ) -> list[Objective]:
        """The recipe's objectives for ``encoder``; ``prepare=False`` when a checkpoint will fill their state."""
        objectives = []
        for resolved in self.recipe.objectives:
            own = encoder if resolved.encoder_key is None else encoder[resolved.encoder_key]
            # Registration declares what an encoder family can give; the built model (a CNN or a
            # ViT under the same name) decides what it does give.
            for single in own.values() if isinstance(own, EncoderSet) else [own]:
                missing = resolved.component.requires - set(getattr(single, "provides", ()))
                if missing:
                    raise SSLHubError(
                        f"objective '{resolved.component.name}' needs {', '.join(sorted(missing))} features, but the "
                        f"built {type(single).__name__} gives only {', '.join(sorted(single.provides))}; "
                        "choose an encoder model that has them"
                    )
            objective = resolved.build(self._context(modality, own)).to(self.device)
            objective.sslhub_name = resolved.component.name
            if prepare:
                objective.prepare(modality, own)
            objectives.append(objective)
        names = [o.sslhub_name for o in objectives]
        for index, objective in enumerate(objectives):
            if names.count(objective.sslhub_name) > 1:
                objective.sslhub_name = f"{objective.sslhub_name}{index}"
        return objectives

    def build_augmentations(self, modality: Modality) -> nn.Sequential:
        context = self._context(modality)
        return nn.Sequential(*[a.build(context) for a in self.recipe.augmentations]).to(self.device)

    def _context(self, modality: Modality, encoder: Encoder | EncoderSet | None = None) -> BuildContext:
        return BuildContext(
            modality=modality,
            modality_name=self.recipe.modality.component.name,
            run_dir=self.run_dir,
            seed=self.recipe.model.seed,
            device=self.device,
            encoder=encoder,
        )

    def load_trained(self) -> tuple[Run, Modality, Encoder | EncoderSet, list[Objective]]:
        """Rebuild the components and load the newest good checkpoint's weights (for evaluate/export)."""
        modality = self.build_modality()
        encoder = self.build_encoder(modality)
        objectives = self.build_objectives(modality, encoder, prepare=False)
        module = self.training_module(encoder, objectives)
        loaded = self.checkpoints.load_latest(map_location=self.device)
        if loaded is None:
            raise CheckpointError(f"no usable checkpoint in {self.checkpoints.directory}")
        payload, path = loaded
        try:
            module.load_state_dict(payload["model"])
        except RuntimeError as exc:
            raise CheckpointError(
                f"checkpoint {path} does not fit this recipe's model: {str(exc).splitlines()[0]}"
            ) from exc
        log.info("loaded %s (step %d)", path, payload["step"])
        return self, modality, encoder, objectives

    # -- training ----------------------------------------------------------------

    def execute(self, dry_run: bool = False) -> dict[str, Any]:
        """Train (or one step for ``dry_run``), evaluate, export; return the summary."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_run_dir()
        modality = self.build_modality()
        encoder = self.build_encoder(modality)
        objectives = self.build_objectives(modality, encoder, prepare=not self.resume)
        augment = self.build_augmentations(modality)
        module = self.training_module(encoder, objectives)
        if self.train_spec.channels_last:
            module = module.to(memory_format=torch.channels_last)
        dataset = modality.train_dataset()
        sampler = EpochSampler(
            len(dataset),
            self.recipe.model.seed,
            self.train_spec.batch_size,
            distributed.rank(),
            distributed.world_size(),
        )
        if sampler.batches_per_epoch() == 0:
            raise SSLHubError(
                f"the training data has {len(dataset)} samples, fewer than one batch of "
                f"{self.train_spec.batch_size} per process: lower train.batch_size"
            )
        total_steps = self._total_steps(sampler)
        optimizer = build_optimizer(module, self.train_spec.optimizer)
        scheduler = build_schedule(optimizer, self.train_spec, total_steps)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.train_spec.precision == "fp16")
        state = RunState()
        if self.is_main and not self.resume:
            self._write_records(modality)

        if self.resume:
            state = self._restore(module, optimizer, scheduler, scaler)
        model: nn.Module = module
        if distributed.is_distributed():
            self_updated = {id(p) for o in module.objectives for p in o.self_updated_parameters()}
            if self_updated:
                # Their objective reduces their gradients itself; DDP's hooks would fire twice.
                ignored = [name for name, p in module.named_parameters() if id(p) in self_updated]
                nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignored)
            model = nn.parallel.DistributedDataParallel(
                module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=any(s > 0 for s in module.starts),
            )
        if self.train_spec.compile:
            model = torch.compile(model)

        if distributed.world_size() > 1 and not self.resume:
            # Same init on every rank (DDP broadcasts it anyway), but each rank needs its own
            # augmentation randomness, or all ranks would draw identical views.
            torch.manual_seed(self.recipe.model.seed + 1000003 * distributed.rank())
        with self._compile_errors_explained():
            if dry_run:
                return self._dry_run(model, module, modality, augment, dataset, sampler, optimizer, scaler, state)
            self._train(
                model, module, modality, augment, dataset, sampler, optimizer, scheduler, scaler, state, total_steps
            )
        if total_steps == 0:
            # A baseline run: the initial state is its checkpoint, so evaluate, export and resume work.
            self._save(module, optimizer, scheduler, scaler, state)
        summary: dict[str, Any] = {"steps": state.step, "train_seconds": round(state.elapsed, 2)}
        if total_steps == 0:
            summary["random_init"] = True
            summary["note"] = "train.steps is 0: nothing was trained; the encoder is at its random initialisation"
        if self.is_main:
            summary["final_loss"] = self._last_loss(state)
            summary["evaluation"] = self.evaluate(modality, encoder, objectives)
            if self.recipe.model.export and self.recipe.model.export.onnx:
                summary["export"] = self.export(encoder, modality)
            atomic_write_bytes(self.run_dir / "summary.json", json.dumps(summary, indent=2, default=str).encode())
            if self.recipe.model.report.enabled:  # imported here: plotting stays off the training path
                from sslhub.report.run_end import write_report_at_run_end

                write_report_at_run_end(self.run_dir, modality, augment, dataset, self.device)
        return summary

    def _total_steps(self, sampler: EpochSampler) -> int:
        if self.train_spec.steps is not None:
            return self.train_spec.steps
        per_epoch = sampler.batches_per_epoch() // self.train_spec.grad_accumulation
        return max(1, int(math.ceil(self.train_spec.epochs * per_epoch)))

    def _batches(self, dataset, sampler: EpochSampler, modality: Modality, state: RunState):
        """Yield device batches forever, tracking the data position in ``state``."""
        sampler.epoch, sampler.start_batch = state.epoch, state.batch_in_epoch
        while True:
            loader = DataLoader(
                dataset,
                batch_size=self.train_spec.batch_size,
                sampler=sampler,
                collate_fn=modality.collate,
                num_workers=self.train_spec.num_workers,
                pin_memory=self.device.type == "cuda",
                drop_last=True,
                persistent_workers=False,
                # A private generator keeps worker seeding from consuming the global RNG,
                # which must advance identically in an uninterrupted and a resumed run.
                generator=torch.Generator().manual_seed(self.recipe.model.seed + state.epoch),
            )
            for batch in loader:
                state.batch_in_epoch += 1
                batch = {
                    k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()
                }
                yield modality.on_device(batch)
            state.epoch += 1
            state.batch_in_epoch = 0
            sampler.epoch, sampler.start_batch = state.epoch, 0

    def _make_views(self, augment: nn.Sequential, batch: Batch, count: int) -> list[Batch]:
        views = [augment(dict(batch)) for _ in range(count)]
        if self.train_spec.channels_last:
            views = [
                {
                    k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 and v.is_floating_point() else v
                    for k, v in view.items()
                }
                for view in views
            ]
        return views

    @contextlib.contextmanager
    def _compile_errors_explained(self):
        """A torch.compile failure (no C++ compiler, no Triton, an unsupported op) as one message."""
        try:
            yield
        except Exception as exc:
            from_compiler = any(
                cls.__module__.startswith(("torch._dynamo", "torch._inductor")) for cls in type(exc).__mro__
            )
            if not (self.train_spec.compile and from_compiler):
                raise
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SSLHubError(
                f"torch.compile failed (train.compile: true): {first_line}. "
                "Train without it with --set train.compile=false; --debug shows the traceback."
            ) from exc

    def _autocast(self):
        dtype = PRECISION_DTYPES.get(self.train_spec.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _train(
        self,
        model,
        module,
        modality,
        augment,
        dataset,
        sampler,
        optimizer,
        scheduler,
        scaler,
        state: RunState,
        total_steps: int,
    ) -> None:
        spec = self.train_spec
        num_views = max(o.num_views for o in module.objectives)
        batches = self._batches(dataset, sampler, modality, state)
        metrics_file = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") if self.is_main else None
        progress = self._progress(total_steps, state.step)
        previous = self._install_signal_handlers()
        tensorboard = self._tensorboard()
        window_start, window_samples = time.perf_counter(), 0
        try:
            model.train()
            while state.step < total_steps:
                step_start = time.perf_counter()
                logged: dict[str, Any] = {}
                loss_sum = torch.zeros((), device=self.device)
                for micro in range(spec.grad_accumulation):
                    batch = next(batches)
                    views = self._make_views(augment, batch, num_views)
                    sync = contextlib.nullcontext()
                    if isinstance(model, nn.parallel.DistributedDataParallel) and micro < spec.grad_accumulation - 1:
                        sync = model.no_sync()
                    with sync:
                        with self._autocast():
                            loss, logged = model(views, module.active_at(state.step))
                        scaler.scale(loss / spec.grad_accumulation).backward()
                    loss_sum += loss.detach().float() / spec.grad_accumulation
                    window_samples += next(iter(batch.values())).shape[0]
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    module.parameters(), spec.grad_clip if spec.grad_clip else float("inf")
                )
                # One host-device sync per step: the loss and gradient norm come back together.
                total_loss, grad_norm_value = torch.stack([loss_sum, grad_norm.detach().float()]).tolist()
                nonfinite: str | None = None
                if not math.isfinite(total_loss):
                    nonfinite = self._nonfinite_culprit(logged)
                elif not math.isfinite(grad_norm_value) and not scaler.is_enabled():
                    nonfinite = "gradient"
                if not self._agree_finite(nonfinite is None):
                    nonfinite = nonfinite or "another rank"
                if nonfinite is not None:
                    optimizer.zero_grad(set_to_none=True)
                    self._handle_nonfinite(nonfinite, state, scaler, module)
                else:
                    state.skipped_in_a_row = 0
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                state.step += 1
                state.elapsed += time.perf_counter() - step_start
                self._record_history(state, total_loss, logged)

                if self.is_main and (state.step % spec.log_every == 0 or state.step == total_steps):
                    now = time.perf_counter()
                    throughput = window_samples * distributed.world_size() / max(now - window_start, 1e-9)
                    window_start, window_samples = now, 0
                    record = {
                        "step": state.step,
                        "epoch": state.epoch,
                        "loss": total_loss,
                        "lr": scheduler.get_last_lr()[0],
                        "grad_norm": grad_norm_value,
                        "samples_per_s": round(throughput, 2),
                        **{k: _to_float(v) for k, v in logged.items()},
                    }
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                    if tensorboard is not None:
                        for key, value in record.items():
                            if key != "step":
                                tensorboard.add_scalar(key, value, state.step)
                    if progress is not None:
                        progress.set_postfix(loss=f"{total_loss:.4f}", samples_s=f"{throughput:.0f}")
                if progress is not None:
                    progress.update(1)
                if state.step % spec.checkpoint_every == 0 or state.step == total_steps:
                    self._save(module, optimizer, scheduler, scaler, state)
                if self._signal is not None:
                    path = self._save(module, optimizer, scheduler, scaler, state)
                    name, code = self._signal
                    raise RunInterrupted(name, code, str(path))
            self._check_final_loss(state)
        finally:
            self._restore_signal_handlers(previous)
            if progress is not None:
                progress.close()
            if metrics_file is not None:
                metrics_file.close()
            if tensorboard is not None:
                tensorboard.close()

    def _nonfinite_culprit(self, logged: dict[str, Any]) -> str:
        for key, value in logged.items():
            if key.endswith("/loss") and not math.isfinite(_to_float(value)):
                return f"objective '{key.rsplit('/', 1)[0]}'"
        return "total loss"

    def _agree_finite(self, finite: bool) -> bool:
        if not distributed.is_distributed():
            return finite
        flag = torch.tensor([1.0 if finite else 0.0], device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item() == 1.0)

    def _handle_nonfinite(self, culprit: str, state: RunState, scaler, module: nn.Module) -> None:
        """Raise, or skip the step; the update was not applied (gradients are checked before it).

        Skipping cannot help once the weights themselves are non-finite (an earlier update with
        finite gradients overflowed them): that is checked here, only on a non-finite step, so
        finite steps pay no extra host sync.
        """
        where = f"step {state.step + 1}"
        if self.train_spec.nonfinite == "raise":
            raise NonFiniteLossError(
                f"non-finite loss or gradient at {where} from {culprit}; lower train.optimizer.lr, set "
                f"train.grad_clip, or set train.nonfinite: skip_step. The last checkpoint is intact."
            )
        broken = _nonfinite_parameters(module)
        if broken:
            raise NonFiniteLossError(
                f"non-finite loss at {where} from {culprit}, and the weights themselves are non-finite "
                f"({', '.join(broken[:3])}{', ...' if len(broken) > 3 else ''}): an earlier update overflowed them, so "
                "skipping steps cannot recover. Lower train.optimizer.lr or set train.grad_clip; "
                "the last checkpoint is intact."
            )
        state.skipped_in_a_row += 1
        log.warning("skipping %s: non-finite value from %s", where, culprit)
        if self.is_main:
            record_event(self.run_dir, "skipped_step", state.step + 1, culprit=culprit)
        if scaler.is_enabled():
            scaler.update()
        if state.skipped_in_a_row > self.train_spec.max_skipped_steps:
            raise NonFiniteLossError(
                f"{state.skipped_in_a_row} steps in a row had non-finite values (last at {where}, from {culprit}); "
                "stopping. Lower the learning rate or use precision: fp32."
            )

    def _record_history(self, state: RunState, total_loss: float, logged: dict[str, Any]) -> None:
        state.history.setdefault("loss", []).append(total_loss)

    def _last_loss(self, state: RunState) -> float | None:
        """The mean of the last 10 finite step losses (skipped steps left out)."""
        losses = state.history.get("loss") or []
        tail = [loss for loss in losses[-10:] if math.isfinite(loss)]
        return round(sum(tail) / len(tail), 6) if tail else None

    def _check_final_loss(self, state: RunState) -> None:
        """A run whose last step was not finite has not trained to a usable model: never a success."""
        losses = state.history.get("loss") or []
        if losses and not math.isfinite(losses[-1]):
            raise NonFiniteLossError(
                f"the final loss (step {state.step}) is not finite: the run did not end with a usable model; "
                "lower train.optimizer.lr or set train.grad_clip. The last checkpoint holds finite weights."
            )

    # -- checkpoints -------------------------------------------------------------

    def _prepare_run_dir(self) -> None:
        """Remove what interrupted writes left behind; a resume of a run that never saved starts over.

        A kill before the first checkpoint leaves the recipe and records but nothing to
        continue from: such a run starts again from step 0 with its recipe, saying so.
        """
        if self.is_main:
            for folder in (self.run_dir, self.checkpoints.directory, self.checkpoints.directory / "rng"):
                for path in remove_stale_temp_files(folder):
                    log.info("removed %s, left by an interrupted write", path)
        if self.resume and not self.checkpoints.holds_checkpoints():
            log.info(
                "%s holds no checkpoint (the run stopped before its first one): starting it from the "
                "beginning (step 0) with its recipe",
                self.run_dir,
            )
            self.resume = False
            self._truncate_metrics(0)

    def _rank_rng_file(self, step: int, rank: int) -> Path:
        return self.checkpoints.directory / "rng" / f"step_{step:08d}.rank{rank}.pt"

    def _save_rank_rng(self, step: int) -> None:
        """Ranks other than 0 keep their own RNG state beside the checkpoint (no collective needed).

        Each rank draws its own augmentation randomness; restoring rank 0's state everywhere
        would make every rank draw the same views after a resume.
        """
        rank = distributed.rank()
        path = self._rank_rng_file(step, rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(rng_state(self.device), buffer)
        atomic_write_bytes(path, buffer.getvalue())
        own = sorted(path.parent.glob(f"step_*.rank{rank}.pt"))
        for stale in own[: -self.checkpoints.keep]:
            stale.unlink(missing_ok=True)

    def _save(self, module, optimizer, scheduler, scaler, state: RunState) -> Path | None:
        if distributed.is_distributed() and distributed.rank() > 0:
            self._save_rank_rng(state.step)
        if not self.is_main:
            return None
        broken = _nonfinite_parameters(module)
        if broken:  # one host sync per checkpoint, not per step
            raise NonFiniteLossError(
                f"the weights are non-finite at step {state.step} ({', '.join(broken[:3])}): not saving a checkpoint; "
                "the last checkpoint is intact. Lower train.optimizer.lr or set train.grad_clip."
            )
        payload = {
            "step": state.step,
            "epoch": state.epoch,
            "batch_in_epoch": state.batch_in_epoch,
            "elapsed": state.elapsed,
            "model": module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng_state(self.device),
            "recipe_fingerprint": self.recipe.fingerprint(),
            "world_size": distributed.world_size(),
        }
        return self.checkpoints.save(payload, state.step)

    def _restore_rank_rng(self, payload: dict[str, Any]) -> None:
        rank = distributed.rank()
        if rank == 0:
            return
        path = self._rank_rng_file(payload["step"], rank)
        if path.is_file() and payload.get("world_size") == distributed.world_size():
            try:
                # weights_only, as for checkpoints: tensors and plain containers, never pickled code.
                restore_rng_state(torch.load(path, map_location="cpu", weights_only=True), self.device)
                return
            except Exception as exc:  # noqa: BLE001 - any unreadable file means "no saved state"
                log.warning("cannot read %s: %s", path, str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
        log.warning(
            "no saved RNG state of rank %d for step %d (another world size, or an older run): "
            "this rank continues with a fresh seed, so the run will not repeat an uninterrupted one exactly",
            rank,
            payload["step"],
        )
        torch.manual_seed(self.recipe.model.seed + 1000003 * rank + payload["step"])

    def _restore(self, module, optimizer, scheduler, scaler) -> RunState:
        loaded = self.checkpoints.load_latest(map_location=self.device)
        if loaded is None:
            raise CheckpointError(f"no usable checkpoint in {self.checkpoints.directory}; start a new run instead")
        payload, path = loaded
        if payload.get("recipe_fingerprint") != self.recipe.fingerprint():
            log.warning("the recipe differs from the one this checkpoint was trained with; continuing with the new one")
        try:
            module.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
            scheduler.load_state_dict(payload["scheduler"])
            scaler.load_state_dict(payload["scaler"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {path} does not fit this recipe's model: {str(exc).splitlines()[0]}"
            ) from exc
        restore_rng_state(payload["rng"], self.device)
        self._restore_rank_rng(payload)
        state = RunState(
            step=payload["step"],
            epoch=payload["epoch"],
            batch_in_epoch=payload["batch_in_epoch"],
            elapsed=payload.get("elapsed", 0.0),
        )
        self._truncate_metrics(state.step)
        if self.is_main:
            record_event(self.run_dir, "resumed", state.step)
        log.info("resumed from %s at step %d", path, state.step)
        return state

    def _truncate_metrics(self, step: int) -> None:
        path = self.run_dir / "metrics.jsonl"
        if not self.is_main or not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (ValueError, KeyError):
                continue
        atomic_write_bytes(path, ("\n".join(kept) + "\n" if kept else "").encode())

    # -- signals -----------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        if os.environ.get("SSLHUB_NO_SIGNAL_HANDLERS"):
            return previous

        def handler(signum, frame):
            if self._signal is not None:  # a second signal means "now"
                raise KeyboardInterrupt
            self._signal = (signal.Signals(signum).name, 128 + signum)

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                break
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    # -- records, progress -------------------------------------------------------

    def _write_records(self, modality: Modality) -> None:
        (self.run_dir / "recipe.yaml").write_text(self.recipe.resolved_yaml())
        environment = {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device)
            if self.device.type == "cuda"
            else platform.processor(),
            "world_size": distributed.world_size(),
            "plugins": [r.as_dict() for r in self.recipe.catalog.plugins if not r.blocked],
            "plugin_args": list(self.recipe.catalog.load_args),
            "data_fingerprint": modality.fingerprint(),
            "recipe_fingerprint": self.recipe.fingerprint(),
            "recipe_file": self.recipe.source.file,
        }
        for package in ("torchvision", "torchaudio", "timm", "transformers", "onnx", "onnxruntime"):
            with contextlib.suppress(Exception):
                from importlib.metadata import version

                environment[package] = version(package)
        atomic_write_bytes(self.run_dir / "environment.json", json.dumps(environment, indent=2).encode())

    def _progress(self, total: int, initial: int):
        if not (self.is_main and self.show_progress):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=self.recipe.model.name, unit="step", dynamic_ncols=True)

    def _tensorboard(self):
        if not self.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.run_dir / "tensorboard"))

    # -- dry run, evaluation, export ---------------------------------------------

    def _dry_run(self, model, module, modality, augment, dataset, sampler, optimizer, scaler, state) -> dict[str, Any]:
        batches = self._batches(dataset, sampler, modality, state)
        num_views = max(o.num_views for o in module.objectives)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        batch = next(batches)
        views = self._make_views(augment, batch, num_views)
        with self._autocast():
            loss, logged = model(views, module.active_at(0))
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        report = {
            "dry_run": True,
            "device": str(self.device),
            "train_samples": len(dataset),
            "encoder_parameters": sum(p.numel() for p in module.encoder.parameters()),
            "objective_parameters": {o.sslhub_name: sum(p.numel() for p in o.parameters()) for o in module.objectives},
            "loss": round(float(loss.item()), 6),
            "step_seconds": round(elapsed, 4),
            "views": num_views,
        }
        if self.device.type == "cuda":
            report["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        else:
            with contextlib.suppress(Exception):
                import resource

                report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        return report

    def evaluate(
        self,
        modality: Modality,
        encoder: Encoder | EncoderSet,
        objectives: list[Objective],
        split: EvalSplit | None = None,
        output_name: str = "evaluation.json",
    ) -> dict[str, Any]:
        """Write ``output_name`` comparing the trained encoder(s) with random init and the raw input.

        See :func:`sslhub.evaluation.evaluate_run`; ``split`` None probes the modality's own split.
        """
        setup = EvaluationSetup(
            spec=self.recipe.model.evaluate,
            seed=self.recipe.model.seed,
            device=self.device,
            run_dir=self.run_dir,
            objective_encoder_keys=self.encoder_keys(),
            held_out_batch_size=self.train_spec.batch_size,
            build_random_init=lambda: self.build_encoder(modality),
            build_objectives=lambda random_encoder: self.build_objectives(modality, random_encoder),
        )
        split = self.labeled_split(modality) if split is None else split
        return evaluate_run(setup, modality, encoder, objectives, split=split, output_name=output_name)

    def labeled_split(self, modality: Modality) -> EvalSplit | None:
        """The recipe's labeled split: ``evaluate.data`` when given, else the modality's own."""
        data = self.recipe.model.evaluate.data
        if data is None or self.recipe.eval_source is None:
            return modality.eval_split()
        return modality.labeled_split(self.recipe.eval_source, data.test_fraction, data.split_seed)

    def export(
        self,
        encoder: Encoder | EncoderSet,
        modality: Modality,
        out_dir: Path | None = None,
        opset: int | None = None,
        allow_mismatch: bool = False,
        objectives: list[Objective] | None = None,
        include_head: str | None = None,
    ) -> dict[str, Any]:
        """Export each encoder to verified ONNX: ``onnx/`` for one encoder, ``onnx/KEY/`` for several.

        Args:
            include_head: ``OBJECTIVE.HEAD`` (see ``Objective.export_heads``): the encoder that
                head belongs to is exported as ``head(pooled)``; needs ``objectives``.
        """
        from sslhub.export import DEFAULT_ATOL, DEFAULT_RTOL, export_encoder

        onnx_spec = (
            self.recipe.model.export.onnx if self.recipe.model.export and self.recipe.model.export.onnx else None
        )
        out_dir = out_dir or self.run_dir / "onnx"
        head_key, head_name, head = (None, None, None)
        if include_head:
            head_key, head_name, head = self._export_head(
                objectives or [], include_head, several=isinstance(encoder, EncoderSet)
            )
        results: dict[str, Any] = {}
        for prefix, single in named_encoders(encoder):
            key = prefix.rstrip("/")
            own_head = head if head is not None and head_key == (key or None) else None
            try:
                report = export_encoder(
                    single.to("cpu"),
                    modality,
                    out_dir / key if key else out_dir,
                    opset=opset or (onnx_spec.opset if onnx_spec else 18),
                    atol=onnx_spec.atol if onnx_spec else DEFAULT_ATOL,
                    rtol=onnx_spec.rtol if onnx_spec else DEFAULT_RTOL,
                    allow_mismatch=allow_mismatch,
                    metadata={**self.export_metadata(), "encoder_key": key or None},
                    modality_name=self.recipe.modality.component.name,
                    head=own_head,
                    head_name=head_name if own_head is not None else None,
                    plugin_exporter=self.recipe.catalog.export_with_plugins,
                )
            finally:
                single.to(self.device)
            results[key or "encoder"] = {
                "path": str(report.path),
                "max_abs_diff": report.max_abs_diff,
                "max_rel_diff": report.max_rel_diff,
                "opset": report.opset,
                "passed": report.passed,
                "summary": report.summary(),
            }
        return results

    def _export_head(
        self, objectives: list[Objective], wanted: str, several: bool
    ) -> tuple[str | None, str, nn.Module]:
        """``(encoder key, full head name, head)`` for ``--include-head``, or an error listing the heads.

        A head of an objective over several encoders is named ``ENCODER_KEY.name`` by the objective.
        """
        keys = self.encoder_keys()
        heads: dict[str, tuple[str | None, nn.Module]] = {}
        for position, objective in enumerate(objectives):
            for name, module in objective.export_heads().items():
                key = keys[position]
                if key is None and several and "." in name:
                    key = name.split(".", 1)[0]
                heads[f"{objective.sslhub_name}.{name}"] = (key, module)
        matches = [n for n in heads if n == wanted] or [n for n in heads if n.endswith(f".{wanted}")]
        if len(matches) != 1:
            available = ", ".join(sorted(heads)) or "none (no objective of this recipe has exportable heads)"
            problem = "matches several heads" if matches else "is not a head of this run"
            from sslhub.export import ExportError

            raise ExportError(f"--include-head {wanted!r} {problem}; available: {available}")
        key, module = heads[matches[0]]
        return key, matches[0], module

    def export_metadata(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe.resolved_dict(),
            "plugins": {r.name: r.version for r in self.recipe.catalog.plugins if not r.blocked and not r.errors},
        }
