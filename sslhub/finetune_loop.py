"""One fine-tune: train a :class:`~sslhub.finetune_model.Classifier`, validate, stop early, resume exactly.

Validation runs every ``validate_every`` steps on the held-out labeled samples and feeds
:class:`sslhub.early_stopping.EarlyStopping`; the best weights are kept in memory and in each
checkpoint, so a fine-tune killed and resumed stops at the same step and returns the same
weights as an uninterrupted one. Validation draws no random numbers (no DataLoader, eval mode).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslhub import distributed
from sslhub.checkpoint import CheckpointStore, atomic_write_bytes, remove_stale_temp_files
from sslhub.components import Batch, Modality
from sslhub.early_stopping import EarlyStopping
from sslhub.errors import CheckpointError, SSLHubError
from sslhub.finetune_data import FinetuneData, LabeledSet, SeededBatches, in_order
from sslhub.finetune_model import Classifier, build_finetune_optimizer, parameter_groups
from sslhub.optim import build_schedule
from sslhub.recipe import DEFAULT_FINETUNE_STEPS, FinetuneSpec
from sslhub.resume import restore_rng_state, rng_state, seed_everything

log = logging.getLogger("sslhub")


@dataclass(frozen=True)
class LoopSettings:
    """How one fine-tune runs, beside its :class:`FinetuneSpec`.

    Attributes:
        seed: of the head, the data order and dropout.
        device, precision, compile: as resolved from the spec and the run's ``train`` section.
        checkpoints: where checkpoints go (None: none, e.g. the comparison's fine-tunes).
        metrics_file: ``metrics.jsonl`` (None: no log).
    """

    seed: int
    device: torch.device
    precision: str = "fp32"
    compile: bool = False
    checkpoints: Path | None = None
    metrics_file: Path | None = None


@dataclass
class FinetuneOutcome:
    """What a fine-tune ended with (the classifier holds the returned weights)."""

    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int | None = None
    best_value: float | None = None
    stopped: dict[str, Any] | None = None
    restored_best: bool = False


def total_steps(spec: FinetuneSpec, batches: SeededBatches) -> int:
    """``spec.steps``, or ``spec.epochs`` passes over the data, or :data:`DEFAULT_FINETUNE_STEPS`."""
    if spec.epochs is not None:
        return max(1, math.ceil(spec.epochs * batches.per_epoch))
    return spec.steps if spec.steps is not None else DEFAULT_FINETUNE_STEPS


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _to_device(batch: Batch, modality: Modality, device: torch.device) -> tuple[Batch, Tensor]:
    batch = dict(batch)
    labels = batch.pop("label").long().to(device)
    batch = modality.on_device({k: v.to(device, non_blocking=True) for k, v in batch.items()})
    return batch, labels


@torch.no_grad()
def score(
    model: nn.Module, labeled: LabeledSet, modality: Modality, settings: LoopSettings, batch_size: int
) -> dict[str, float]:
    """``{"loss", "accuracy"}`` of ``model`` on every sample of ``labeled`` (plain cross-entropy)."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for batch in in_order(labeled, modality, batch_size):
        inputs, labels = _to_device(batch, modality, settings.device)
        with _autocast(settings.device, settings.precision):
            logits = model(inputs).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += int((logits.argmax(1) == labels).sum())
    model.train(was_training)
    return {"loss": loss_sum / len(labeled), "accuracy": correct / len(labeled)}


class FinetuneLoop:
    """Trains ``classifier`` on ``data`` as ``spec`` says; see the module docstring.

    Args:
        classifier: encoder + head, on ``settings.device``.
        data: train, validation and test sides.
        modality: collates and preprocesses batches.
        spec: the ``finetune:`` options.
        settings: seed, device, precision, where to checkpoint and log.
    """

    def __init__(
        self,
        classifier: Classifier,
        data: FinetuneData,
        modality: Modality,
        spec: FinetuneSpec,
        settings: LoopSettings,
    ):
        self.classifier, self.data, self.modality = classifier, data, modality
        self.spec, self.settings = spec, settings
        shard = (distributed.rank(), distributed.world_size())
        self.batches = SeededBatches(data.train, modality, spec.batch_size, settings.seed, shard)
        self.total = total_steps(spec, self.batches)
        options = spec.optimizer.options_dict()
        groups = parameter_groups(
            classifier,
            options["lr"],
            spec.encoder_lr_scale,
            spec.layer_decay,
            options.get("weight_decay", 0.0),
            options.get("decay_norm_and_bias", False),
        )
        self.optimizer = build_finetune_optimizer(groups, spec.optimizer.name, options)
        self.scheduler = build_schedule(self.optimizer, spec, self.total)
        self.scaler = torch.amp.GradScaler(settings.device.type, enabled=settings.precision == "fp16")
        self.early_stopping = EarlyStopping(spec.early_stopping) if spec.early_stopping is not None else None
        self.loss_weights = self._class_weights()
        self.model = self._wrap(classifier)
        self.store = CheckpointStore(settings.checkpoints, keep=2) if settings.checkpoints else None
        self.is_main = distributed.is_main_process()
        self.outcome = FinetuneOutcome(steps=0)
        self.best_weights: dict[str, Tensor] | None = None
        self.position = (0, 0)

    def _wrap(self, classifier: Classifier) -> nn.Module:
        """DDP under torchrun (each process a share of every batch), then ``torch.compile`` when asked."""
        model: nn.Module = classifier
        if distributed.is_distributed():
            device = self.settings.device
            model = nn.parallel.DistributedDataParallel(
                classifier, device_ids=[device.index] if device.type == "cuda" else None
            )
        return torch.compile(model) if self.settings.compile else model

    def _class_weights(self) -> Tensor | None:
        if self.spec.class_weights != "balanced":
            return None
        from sslhub.finetune_data import balanced_class_weights

        return balanced_class_weights(self.data.train.labels, self.data.num_classes).to(self.settings.device)

    def run(self, resume: bool = False) -> FinetuneOutcome:
        """Train until ``steps``/``epochs`` or early stopping; end with the best weights when asked."""
        if not (resume and self._restore()):
            seed_everything(self.settings.seed)
            self._truncate_metrics(0)
        self.classifier.train()
        steps = self._steps()
        while self.outcome.steps < self.total and not (self.early_stopping and self.early_stopping.should_stop):
            epoch, index, batch = next(steps)
            loss = self._train_step(batch)
            self.outcome.steps += 1
            self.position = (epoch, index + 1) if index + 1 < self.batches.per_epoch else (epoch + 1, 0)
            self._after_step(loss)
        self._finish()
        return self.outcome

    def _steps(self) -> Iterator[tuple[int, int, Batch]]:
        return self.batches.from_position(*self.position)

    def _train_step(self, batch: Batch) -> float:
        inputs, labels = _to_device(batch, self.modality, self.settings.device)
        with _autocast(self.settings.device, self.settings.precision):
            logits = self.model(inputs).float()
        loss = F.cross_entropy(logits, labels, weight=self.loss_weights, label_smoothing=self.spec.label_smoothing)
        if not torch.isfinite(loss):
            raise SSLHubError(
                f"fine-tuning loss is {loss.item()} at step {self.outcome.steps + 1}; "
                "lower finetune.optimizer.lr or set finetune.grad_clip"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.spec.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.classifier.parameters(), self.spec.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.item()

    def _after_step(self, loss: float) -> None:
        step = self.outcome.steps
        if step % self.spec.log_every == 0 or step == self.total:
            self._log({"step": step, "loss": loss, "lr": self.optimizer.param_groups[-1]["lr"]})
        if self.data.validation is not None and (step % self.spec.validate_every == 0 or step == self.total):
            self._validate(step)
        stopping = self.early_stopping is not None and self.early_stopping.should_stop
        if step % self.spec.checkpoint_every == 0 or step == self.total or stopping:
            self._save()

    def _validate(self, step: int) -> None:
        assert self.data.validation is not None
        scores = score(self.classifier, self.data.validation, self.modality, self.settings, self.spec.batch_size * 4)
        row = {"step": step, "val_loss": scores["loss"], "val_accuracy": scores["accuracy"]}
        if distributed.is_distributed():
            # Every process scores the same samples with the same weights; rank 0's figures decide
            # for all, so no rounding difference between devices can make one process stop alone.
            holder = [row]
            torch.distributed.broadcast_object_list(holder, src=0)
            row = holder[0]
        self.outcome.history.append(row)
        self._log(row)
        if self.early_stopping is None:
            return
        if self.early_stopping.update(row[self.early_stopping.spec.monitor], step):
            self.best_weights = {k: v.detach().clone() for k, v in self.classifier.state_dict().items()}
        stopped = self.early_stopping.stopped
        if stopped is not None and stopped.step == step and step < self.total:  # at the last step it is no news
            log.info("early stopping at step %d of %d: %s", step, self.total, stopped.reason)

    def _finish(self) -> None:
        stopper = self.early_stopping
        if stopper is not None:
            self.outcome.best_step, self.outcome.best_value = stopper.best_step, stopper.best_value
            self.outcome.stopped = stopper.stopped.as_dict() if stopper.stopped else None
            if stopper.spec.restore_best and self.best_weights is not None:
                self.classifier.load_state_dict(self.best_weights)
                self.outcome.restored_best = True
        self.classifier.eval()

    # -- checkpoints and the log -------------------------------------------------------

    def _save(self) -> None:
        if self.store is None or not self.is_main:
            return
        payload = {
            "step": self.outcome.steps,
            "epoch": self.position[0],
            "batch_in_epoch": self.position[1],
            "model": self.classifier.state_dict(),
            "best_weights": self.best_weights,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "early_stopping": self.early_stopping.state_dict() if self.early_stopping else None,
            "history": self.outcome.history,
            "rng": rng_state(self.settings.device),
        }
        self.store.save(payload, self.outcome.steps)

    def _restore(self) -> bool:
        """Load the newest good checkpoint; False when there is none (start from step 0)."""
        if self.store is None:
            return False
        for folder in (self.store.directory, self.store.directory.parent) if self.is_main else ():
            for stale in remove_stale_temp_files(folder):
                log.info("removed %s, left by an interrupted write", stale)
        if not self.store.holds_checkpoints():
            log.info("%s holds no checkpoint yet: the fine-tune starts from step 0", self.store.directory)
            return False
        loaded = self.store.load_latest(map_location=self.settings.device)
        if loaded is None:
            raise CheckpointError(
                f"no usable checkpoint in {self.store.directory} (every one is damaged); "
                "start the fine-tune again under another --name"
            )
        payload, path = loaded
        try:
            self.classifier.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.scheduler.load_state_dict(payload["scheduler"])
            self.scaler.load_state_dict(payload["scaler"])
            if self.early_stopping is not None:
                self.early_stopping.load_state_dict(payload["early_stopping"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"checkpoint {path} does not fit this fine-tune: {first}") from None
        self.best_weights = payload["best_weights"]
        self.outcome.steps, self.outcome.history = payload["step"], list(payload["history"])
        self.position = (payload["epoch"], payload["batch_in_epoch"])
        restore_rng_state(payload["rng"], self.settings.device)
        self._truncate_metrics(payload["step"])
        log.info("resumed the fine-tune from %s at step %d", path, payload["step"])
        return True

    def _log(self, row: dict[str, float]) -> None:
        if self.settings.metrics_file is not None and self.is_main:
            with self.settings.metrics_file.open("a") as handle:
                handle.write(json.dumps(row) + "\n")

    def _truncate_metrics(self, step: int) -> None:
        """Drop the log lines after ``step``, which a resumed fine-tune writes again."""
        path = self.settings.metrics_file
        if path is None or not path.exists() or not distributed.is_main_process():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line a kill cut short
        atomic_write_bytes(path, "".join(f"{line}\n" for line in kept).encode())
