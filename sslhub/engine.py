"""A run from start to end: build, train, evaluate, export. The parts live in their own modules.

- :mod:`sslhub.building`: the components of a recipe (and the :class:`TrainingModule`);
- :mod:`sslhub.training`: the loop; :mod:`sslhub.training_data`: the data stream;
- :mod:`sslhub.resume`: checkpoints, per-rank RNG, resume;
- :mod:`sslhub.run_dir`: records, ``metrics.jsonl`` truncation, cleanup after a kill;
- :mod:`sslhub.callbacks` and :mod:`sslhub.builtin_callbacks`: training events;
- :mod:`sslhub.evaluation` and :mod:`sslhub.export`: what happens after training.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from sslhub import distributed
from sslhub.building import ComponentBuilder, TrainingModule, select_device
from sslhub.builtin_callbacks import (
    EarlyStoppingCallback,
    MetricsFile,
    NonFinitePolicy,
    ProgressBar,
    RunEventsFile,
    TensorBoardLogger,
)
from sslhub.callbacks import CallbackList, CallbackRegistry, EvaluationDone, RunInfo, plugin_callbacks
from sslhub.checkpoint import CheckpointStore
from sslhub.components import EncoderSet, EvalSplit, Modality, Objective
from sslhub.dry_run import dry_run_report
from sslhub.errors import RecipeError, RecipeIssue, SSLHubError
from sslhub.evaluation import EvaluationSetup, evaluate_run
from sslhub.optim import build_optimizer, build_schedule
from sslhub.recipe import ResolvedRecipe
from sslhub.resume import Checkpointer, Trainables, TrainingState
from sslhub.run_dir import RunDirectory
from sslhub.threads import launcher_set_threads, threads_for
from sslhub.training import LoopParts, TrainingLoop, last_loss
from sslhub.training_data import EpochSampler, device_batches, total_steps
from sslhub.validation import HeldOutValidation

log = logging.getLogger("sslhub")

__all__ = ["EpochSampler", "Run", "TrainedModel", "TrainingModule", "select_device"]


@dataclass(frozen=True)
class TrainedModel:
    """A run's components with the newest good checkpoint's weights (what evaluate/export use)."""

    modality: Modality
    encoders: EncoderSet
    objectives: list[Objective]


@dataclass
class _Setup:
    """Everything built before the first step."""

    trained: TrainedModel
    parts: LoopParts
    state: TrainingState
    dataset: Dataset

    @property
    def train_samples(self) -> int:
        return len(self.dataset)


class Run:
    """Builds a resolved recipe into components and trains, evaluates and exports it.

    Args:
        recipe: a validated recipe.
        run_dir: where everything is written; an existing run directory resumes.
        resume: continue from the newest good checkpoint in ``run_dir``.
        show_progress: a progress bar; None: when stderr is a terminal.
    """

    def __init__(self, recipe: ResolvedRecipe, run_dir: Path, resume: bool = False, show_progress: bool | None = None):
        self.recipe, self.run_dir, self.resume = recipe, Path(run_dir), resume
        self.train_spec = recipe.train
        self.is_main = distributed.is_main_process()
        self.show_progress = sys.stderr.isatty() if show_progress is None else show_progress
        self.device = select_device(self.train_spec.device)
        store = CheckpointStore(self.run_dir / "checkpoints", keep=self.train_spec.keep_checkpoints)
        self.directory = RunDirectory(self.run_dir, store)
        threads = self._threads()
        if threads is not None:
            torch.set_num_threads(threads)
        self.components = ComponentBuilder(recipe, self.run_dir, self.device)
        self.checkpointer = Checkpointer(store, self.device, recipe.fingerprint(), recipe.model.seed)
        early = self.train_spec.early_stopping
        self.early_stopping = EarlyStoppingCallback(early) if early is not None else None

    def _threads(self) -> int | None:
        """``train.threads``; for ``auto`` on resume, the count the run started with.

        Float reductions depend on the thread count, so a resumed run that picked another count
        from the load of the moment would no longer compute exactly as the uninterrupted one.
        """
        recorded = self.directory.recorded_threads() if self.resume else None
        if recorded is not None and self.train_spec.threads == "auto" and not launcher_set_threads():
            return recorded
        return threads_for(self.train_spec.threads)

    def load_trained(self, encoders_only: bool = False) -> TrainedModel:
        """Rebuild the components and load the run's final weights (for evaluate/export).

        The final weights are the newest good checkpoint's, or the best validation's when
        ``train.early_stopping.restore_best`` (as the run's own evaluation and export had them).
        ``encoders_only`` loads the encoders' weights alone and builds no objectives: for an
        encoder whose read-out was changed after training, which the objectives' heads no
        longer fit.
        """
        modality = self.components.modality()
        encoders = self.components.encoders(modality)
        objectives = [] if encoders_only else self.components.objectives(modality, encoders, prepare=False)
        module = self.components.training_module(encoders, objectives)
        self.checkpointer.load_weights(module, encoders_only)
        if self.early_stopping is not None and self.early_stopping.spec.restore_best:
            self.checkpointer.load_best(module, encoders_only)
        return TrainedModel(modality, encoders, objectives)

    def execute(self, dry_run: bool = False) -> dict[str, Any]:
        """Train (or one step for ``dry_run``), evaluate, export; return the summary."""
        self.resume = self.directory.prepare(self.resume)
        setup = self._set_up()
        with self._compile_errors_explained():
            if dry_run:
                return dry_run_report(setup.parts, setup.state, self.train_spec, self.device, setup.train_samples)
            callbacks = self._callbacks()
            TrainingLoop(setup.parts, setup.state, self.train_spec, self.device, self.checkpointer, callbacks).run()
        return self._finish(setup, callbacks)

    def _set_up(self) -> _Setup:
        """Build components, data, optimizer and state in the order that keeps resumes bitwise."""
        modality = self.components.modality()
        encoders = self.components.encoders(modality)
        objectives = self.components.objectives(modality, encoders, prepare=not self.resume)
        augment = self.components.augmentations(modality)
        module = self.components.training_module(encoders, objectives)
        if self.train_spec.channels_last:
            module = module.to(memory_format=torch.channels_last)
        dataset = modality.train_dataset()
        validate = self._validation(modality, augment)
        sampler = self._sampler(len(dataset))
        steps = total_steps(self.train_spec, sampler)
        optimizer = build_optimizer(module, self.train_spec.optimizer)
        trainables = Trainables(
            module=module,
            optimizer=optimizer,
            scheduler=build_schedule(optimizer, self.train_spec, steps),
            scaler=torch.amp.GradScaler(self.device.type, enabled=self.train_spec.precision == "fp16"),
        )
        if self.is_main and not self.resume:
            self.directory.write_records(self.recipe, self.device, modality.fingerprint())
        state = self._restore(trainables) if self.resume else TrainingState()
        model = self._wrap(module)
        if distributed.world_size() > 1 and not self.resume:
            # Same init on every rank (DDP broadcasts it anyway), but each rank needs its own
            # augmentation randomness, or all ranks would draw identical views.
            torch.manual_seed(self.recipe.model.seed + 1000003 * distributed.rank())
        seed = self.recipe.model.seed
        batches = device_batches(dataset, sampler, modality, state, self.train_spec, self.device, seed)
        parts = LoopParts(model, trainables, augment, batches, steps, validate)
        return _Setup(TrainedModel(modality, encoders, objectives), parts, state, dataset)

    def _validation(self, modality: Modality, augment: nn.Module) -> HeldOutValidation | None:
        """The validation ``train.validate_every`` asks for (early stopping implies it), or None.

        Raises:
            RecipeError: at the recipe line asking for it, when the data has no held-out part.
        """
        spec = self.train_spec
        if spec.validate_every is None:
            return None
        held_out = modality.held_out_dataset()
        if held_out is None or len(held_out) == 0:  # type: ignore[arg-type]
            asked = ("train", "early_stopping" if spec.early_stopping is not None else "validate_every")
            message = (
                f"needs held-out data to validate on, but modality '{self.recipe.modality.component.name}' has none "
                "with these data settings (a held-out fraction of the data, where the modality offers one)"
            )
            raise RecipeError([RecipeIssue(self.recipe.source.location(asked), ".".join(asked), message)])
        return HeldOutValidation(self.evaluation_setup(modality), modality, held_out, augment, spec)

    def _sampler(self, size: int) -> EpochSampler:
        batch_size = self.train_spec.batch_size
        sampler = EpochSampler(size, self.recipe.model.seed, batch_size, distributed.rank(), distributed.world_size())
        if sampler.batches_per_epoch() == 0:
            raise SSLHubError(
                f"the training data has {size} samples, fewer than one batch of "
                f"{batch_size} per process: lower train.batch_size"
            )
        return sampler

    def _restore(self, trainables: Trainables) -> TrainingState:
        state = self.checkpointer.restore(trainables)
        self.directory.truncate_metrics(state.step)
        return state

    def _wrap(self, module: TrainingModule) -> nn.Module:
        """DDP under torchrun, then ``torch.compile`` when asked."""
        model: nn.Module = module
        if distributed.is_distributed():
            self_updated = {id(p) for o in module.objectives for p in o.self_updated_parameters()}
            if self_updated:
                # Their objective reduces their gradients itself; DDP's hooks would fire twice.
                # DDP has no public way to leave parameters alone (torch 2.11), hence this
                # private static helper; it stays here, the one place that wraps for DDP.
                ignored = [name for name, p in module.named_parameters() if id(p) in self_updated]
                nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignored)
            model = nn.parallel.DistributedDataParallel(
                module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=any(s > 0 for s in module.starts),
            )
        if self.train_spec.compile:
            model = torch.compile(model)
        return model

    def _callbacks(self) -> CallbackList:
        """The built-in callbacks (policy on every rank, outputs on rank 0), then the plugins'."""
        info = RunInfo(
            run_dir=self.run_dir,
            name=self.recipe.model.name,
            recipe=self.recipe.resolved_dict(),
            device=str(self.device),
            rank=distributed.rank(),
            world_size=distributed.world_size(),
            resumed=self.resume,
        )
        registry = CallbackRegistry(info)
        registry.add(NonFinitePolicy(self.train_spec.nonfinite, self.train_spec.max_skipped_steps), every_rank=True)
        if self.early_stopping is not None:
            registry.add(self.early_stopping, every_rank=True)
        if self.is_main:
            registry.add(MetricsFile(self.directory.metrics_file))
            registry.add(RunEventsFile(self.run_dir, record_skipped=self.train_spec.nonfinite == "skip_step"))
            tensorboard = TensorBoardLogger.if_available(self.run_dir / "tensorboard")
            if tensorboard is not None:
                registry.add(tensorboard)
            if self.show_progress:
                registry.add(ProgressBar(self.recipe.model.name))
        plugin_callbacks(registry, self.recipe.catalog.plugin_manager)
        return CallbackList(info, registry.entries)

    def _finish(self, setup: _Setup, callbacks: CallbackList) -> dict[str, Any]:
        """Evaluate and export on rank 0; write and return the summary."""
        state, trained = setup.state, setup.trained
        summary: dict[str, Any] = {"steps": state.step, "train_seconds": round(state.elapsed, 2)}
        if setup.parts.total_steps == 0:
            summary["random_init"] = True
            summary["note"] = "train.steps is 0: nothing was trained; the encoder is at its random initialisation"
        if self.early_stopping is not None:
            summary["early_stopping"] = self._end_early_stopping(setup)
        if self.is_main:
            summary["final_loss"] = last_loss(state)
            summary["evaluation"] = self.evaluate(trained.modality, trained.encoders, trained.objectives)
            if self.recipe.model.evaluate.enabled:
                callbacks.emit("on_evaluation", EvaluationDone(report=summary["evaluation"]))
            if self.recipe.model.export and self.recipe.model.export.onnx:
                summary["export"] = self.export(trained.encoders, trained.modality)
            self.directory.write_summary(summary)
            if self.recipe.model.report.enabled:  # imported here: plotting stays off the training path
                from sslhub.report.run_end import write_report_at_run_end

                write_report_at_run_end(self.run_dir, trained.modality, setup.parts.augment, setup.dataset, self.device)
        return summary

    def _end_early_stopping(self, setup: _Setup) -> dict[str, Any]:
        """Restore the best weights on rank 0 when asked (before evaluation and export); what happened, for the summary."""
        assert self.early_stopping is not None
        tracker, spec = self.early_stopping.tracker, self.early_stopping.spec
        stopped = setup.state.step < setup.parts.total_steps and tracker.stopped is not None
        result: dict[str, Any] = {
            "monitor": spec.monitor,
            "mode": tracker.mode,
            "stopped_early": stopped,
            "step": setup.state.step,
            "total_steps": setup.parts.total_steps,
            "best_step": tracker.best_step,
            "best_value": tracker.best_value,
            "reason": tracker.stopped.reason if stopped and tracker.stopped else None,
            "restored_best": False,
        }
        # Rank 0 alone evaluates and exports, and alone writes best.pt: another rank could read
        # it while rank 0 still writes the last validation's best.
        if spec.restore_best and tracker.best_step is not None and self.is_main:
            restored = self.checkpointer.load_best(setup.parts.module)
            if restored != tracker.best_step:
                raise SSLHubError(
                    f"the best weights saved in {self.run_dir / 'checkpoints'} are of step {restored}, but early "
                    f"stopping's best was step {tracker.best_step}; the run directory was changed by hand?"
                )
            result["restored_best"] = True
        return result

    @contextlib.contextmanager
    def _compile_errors_explained(self) -> Iterator[None]:
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

    # -- after training ------------------------------------------------------------

    def evaluate(
        self,
        modality: Modality,
        encoders: EncoderSet,
        objectives: list[Objective],
        split: EvalSplit | None = None,
        output_name: str = "evaluation.json",
    ) -> dict[str, Any]:
        """Write ``output_name`` comparing the trained encoder(s) with random init and the raw input.

        See :func:`sslhub.evaluation.evaluate_run`; ``split`` None probes the recipe's labeled split.
        """
        split = self.labeled_split(modality) if split is None else split
        setup = self.evaluation_setup(modality)
        return evaluate_run(setup, modality, encoders, objectives, split=split, output_name=output_name)

    def evaluation_setup(self, modality: Modality) -> EvaluationSetup:
        """What the evaluation, and the validations during training, need from this run."""
        return EvaluationSetup(
            spec=self.recipe.model.evaluate,
            seed=self.recipe.model.seed,
            device=self.device,
            run_dir=self.run_dir,
            objective_encoder_keys=self.components.encoder_keys,
            objective_names=self.components.objective_names,
            held_out_batch_size=self.train_spec.batch_size,
            build_random_init=lambda: self.components.encoders(modality),
            build_objectives=lambda random_encoders: self.components.objectives(modality, random_encoders),
        )

    def labeled_split(self, modality: Modality) -> EvalSplit | None:
        """The recipe's labeled split: ``evaluate.data`` when given, else the modality's own."""
        data = self.recipe.model.evaluate.data
        if data is None or self.recipe.eval_source is None:
            return modality.eval_split()
        return modality.labeled_split(self.recipe.eval_source, data.test_fraction, data.split_seed)

    def export(
        self,
        encoders: EncoderSet,
        modality: Modality,
        out_dir: Path | None = None,
        opset: int | None = None,
        allow_mismatch: bool = False,
        objectives: list[Objective] | None = None,
        include_head: str | None = None,
        formats: Sequence[str] = ("onnx",),
    ) -> dict[str, Any]:
        """Export each encoder to verified ONNX (see :func:`sslhub.export.export_run`).

        ``formats``: everything this export writes (see :mod:`sslhub.export_formats`), recorded
        in the ONNX metadata; only the ONNX part is written here.
        """
        from sslhub.export import RunExportSetup, export_run

        export = self.recipe.model.export
        setup = RunExportSetup(
            modality=modality,
            modality_name=self.recipe.modality.component.name,
            device=self.device,
            metadata={**self.export_metadata(), "formats": list(formats)},
            onnx_spec=export.onnx if export and export.onnx else None,
            plugin_exporter=self.recipe.catalog.export_with_plugins,
            encoder_keys=self.components.encoder_keys,
            objective_names=self.components.objective_names,
        )
        out = out_dir or self.run_dir / "onnx"
        return export_run(setup, encoders, out, opset, allow_mismatch, objectives or [], include_head)

    def export_weights(
        self, encoders: EncoderSet, modality: Modality, formats: Sequence[str], out_dir: Path | None = None
    ) -> dict[str, Any]:
        """Write the ``safetensors`` and ``native`` exports (see :func:`sslhub.export_formats.write_weight_formats`)."""
        from sslhub.export_formats import EncoderDescription, write_weight_formats

        descriptions = {
            key: EncoderDescription(
                name=resolved.component.name,
                params=resolved.params.model_dump(mode="json"),
                modality_name=self.recipe.modality.component.name,
                seed=self.recipe.model.seed,
            )
            for key, resolved in self.recipe.encoders.items()
        }
        out = out_dir or self.run_dir / "onnx"
        return write_weight_formats(encoders, modality, descriptions, out, formats)

    def export_objective_models(self, trained: TrainedModel, out_dir: Path | None = None) -> dict[str, Any]:
        """Each objective's own exported models (:meth:`Objective.export_models`), as ``{OBJECTIVE/NAME: result}``."""
        out = out_dir or self.run_dir / "onnx"
        out.mkdir(parents=True, exist_ok=True)
        results: dict[str, Any] = {}
        for index, objective in enumerate(trained.objectives):
            own = trained.encoders.for_objective(self.components.encoder_keys[index])
            for name, result in objective.export_models(out, own, trained.modality).items():
                results[f"{self.components.objective_names[index]}/{name}"] = result
        return results

    def export_metadata(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe.resolved_dict(),
            "plugins": {r.name: r.version for r in self.recipe.catalog.plugins if not r.blocked and not r.errors},
        }
