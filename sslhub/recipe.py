"""The recipe schema and its resolution against a Catalog.

Validation runs in three passes and reports every problem at once:
1. structure (the core sections below, ``extra="forbid"``),
2. each component's own ``Params`` (from the registry the field names),
3. compatibility (modalities accepted, encoder features an objective needs).
"""

from __future__ import annotations

import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sslhub.catalog import Catalog
from sslhub.components import (
    DEFAULT_ENCODER_KEY,
    FEATURE_KINDS,
    MODALITY_PROPERTY_MEANINGS,
    PROPERTY_MEANINGS,
    Params,
    StrictNumbers,
    field_errors,
)
from sslhub.early_stopping import EarlyStoppingSpec
from sslhub.errors import RecipeError, RecipeIssue
from sslhub.onnx_trace import MAX_ONNX_OPSET, MIN_ONNX_OPSET
from sslhub.optim import OPTIMIZER_OPTIONS
from sslhub.parts import modality_capabilities, part_problems
from sslhub.recipe_yaml import PathKey, RecipeSource, format_path
from sslhub.registry import Component

if TYPE_CHECKING:
    from packaging.requirements import Requirement


class _Section(StrictNumbers):
    model_config = ConfigDict(extra="forbid")


class _Open(StrictNumbers):
    """A component reference: ``name`` plus that component's own parameters."""

    model_config = ConfigDict(extra="allow")


class ComponentSpec(_Open):
    name: str = Field(description="registry key of the component")


class DataSpec(_Open):
    modality: str = Field(description="registry key of the modality; other keys are its parameters")


class ObjectiveSpec(ComponentSpec):
    weight: float = Field(1.0, ge=0, description="multiplier of this objective's loss in the total")
    start_step: int = Field(0, ge=0, description="optimizer step from which this objective is active")
    encoder: str | None = Field(
        None, description="the encoders: key this objective trains; needed only when there are several"
    )


class OptimizerSpec(_Section):
    name: Literal["adamw", "sgd", "lars"] = "adamw"
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd and lars")
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = Field(
        (0.9, 0.999), description="adamw only; each in [0, 1)"
    )
    decay_norm_and_bias: bool = Field(False, description="apply weight decay to norms and biases too")
    trust_coefficient: float = Field(0.001, gt=0, description="lars only")

    @model_validator(mode="after")
    def _only_options_it_takes(self) -> OptimizerSpec:
        ignored = sorted(self.model_fields_set - OPTIMIZER_OPTIONS[self.name])
        takes = ", ".join(sorted(OPTIMIZER_OPTIONS[self.name] - {"name"}))
        if ignored:
            message = f"optimizer {self.name} does not use this option; it takes: {takes}"
            raise field_errors("OptimizerSpec", [(key, getattr(self, key), message) for key in ignored])
        return self

    def options_dict(self) -> dict[str, Any]:
        """The options the chosen optimizer uses, defaults filled in (as ``recipe.yaml`` stores them)."""
        return self.model_dump(mode="json", include=OPTIMIZER_OPTIONS[self.name])


class TrainSpec(_Section):
    steps: int | None = Field(
        None,
        ge=0,
        description="optimizer steps; give steps or epochs. 0 trains nothing: the run checkpoints, evaluates and "
        "exports the encoder at its random initialisation (a baseline for downstream comparisons)",
    )
    epochs: float | None = Field(None, gt=0, description="passes over the training data")
    batch_size: int = Field(64, gt=0, description="per-process batch size of one micro-step")
    grad_accumulation: int = Field(1, ge=1)
    grad_clip: float | None = Field(None, gt=0, description="max global gradient norm")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup: float = Field(0.0, ge=0, lt=1, description="fraction of steps with linear warmup")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine floor as a fraction of lr")
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False
    compile: bool = False
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    num_workers: int = Field(0, ge=0)
    threads: Annotated[int, Field(gt=0)] | Literal["auto"] | None = Field(
        "auto",
        description="CPU threads for torch's operators: a number, auto (the CPUs the load average says are "
        "free; OMP_NUM_THREADS or MKL_NUM_THREADS, as torchrun sets, take precedence) or null (torch's default)",
    )
    checkpoint_every: int = Field(100, gt=0, description="steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, gt=0)
    nonfinite: Literal["raise", "skip_step"] = "raise"
    max_skipped_steps: int = Field(10, ge=0, description="skip_step gives up after this many in a row")
    validate_every: int | None = Field(
        None,
        gt=0,
        description="steps between validations on the held-out data (val_loss and the objectives' held-out "
        "metrics in metrics.jsonl); null: none, or train.checkpoint_every when early_stopping is on",
    )
    early_stopping: EarlyStoppingSpec | None = Field(
        None,
        description="stop when a validation figure stops improving: monitor (loss, the held-out total objective "
        "loss, or a held-out metric OBJECTIVE/METRIC), patience, min_delta, restore_best",
    )

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainSpec:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give either steps or epochs, not both")
        if self.steps is None and self.epochs is None:
            self.steps = 100
        if self.early_stopping is not None and self.validate_every is None:
            self.validate_every = self.checkpoint_every
        return self


class KnnSpec(_Section):
    k: int = Field(20, gt=0)
    temperature: float = Field(0.07, gt=0, description="similarity weighting of neighbour votes")


class LinearProbeSpec(_Section):
    epochs: int = Field(100, gt=0, description="L-BFGS iterations of the logistic regression")
    weight_decay: float | list[float] = Field(
        1e-4,
        description="L2 penalty; a list of candidates is chosen among on a held-out 20% of the probe's training "
        "features (never the test features)",
    )

    @field_validator("weight_decay")
    @classmethod
    def _non_negative(cls, value: float | list[float]) -> float | list[float]:
        values = value if isinstance(value, list) else [value]
        if not values or any(v < 0 for v in values):
            raise ValueError("weight_decay must be >= 0, or a non-empty list of such values")
        return value


class EvalDataSpec(_Section):
    """An explicit labeled evaluation source, used instead of the modality's own labeled split."""

    source: dict[str, Any] = Field(
        description="a labeled source shaped like data.source of the recipe's modality, grouping options included"
    )
    test_fraction: float = Field(0.3, gt=0, lt=1, description="share of each class on the probe-test side")
    split_seed: int = Field(0, description="seed of the probe-train / probe-test split")


class FewShotSpec(_Section):
    shots: list[int] = Field(
        default_factory=lambda: [1, 5, 20], min_length=1, description="labeled probe-train samples per class"
    )
    draws: int = Field(5, gt=0, description="seeded draws per number of shots (mean and std over them)")
    epochs: int = Field(100, gt=0, description="L-BFGS iterations of each probe")
    weight_decay: float = Field(
        1e-2, ge=0, description="L2 penalty of each probe (stronger than the full probe's: few samples)"
    )

    @field_validator("shots")
    @classmethod
    def _positive_and_distinct(cls, value: list[int]) -> list[int]:
        if any(shots <= 0 for shots in value):
            raise ValueError("every number of shots must be > 0")
        if len(set(value)) != len(value):
            raise ValueError("numbers of shots must be distinct")
        return value


class EvaluateSpec(_Section):
    enabled: bool = True
    knn: KnnSpec | None = Field(default_factory=KnnSpec)
    linear_probe: LinearProbeSpec | None = Field(default_factory=LinearProbeSpec)
    few_shot: FewShotSpec | None = Field(default_factory=FewShotSpec)
    batch_size: int = Field(256, gt=0)
    random_init_baseline: bool = True
    raw_baseline: bool = Field(True, description="score the modality's raw-input features with the same probes")
    max_held_out_batches: int = Field(50, gt=0)
    data: EvalDataSpec | None = Field(
        None, description="evaluate on this labeled source instead of the modality's own labeled split"
    )
    max_samples: int | None = Field(
        20000,
        gt=0,
        description="cap on each side (train, test) of the labeled split for kNN and the linear probe: a "
        "seeded random subset above it; null for all",
    )
    embedding_sample: int = Field(
        2000,
        ge=0,
        description="rows of the probe-test features (trained, random init, raw input) saved with their labels in "
        "embeddings_sample.npz for the report's embedding map; 0 saves none",
    )


class OnnxSpec(_Section):
    opset: int = Field(
        18,
        ge=MIN_ONNX_OPSET,
        le=MAX_ONNX_OPSET,
        description=f"ONNX opset of the file; torch.onnx's exporter writes {MIN_ONNX_OPSET} to {MAX_ONNX_OPSET}",
    )
    atol: float = Field(1e-4, gt=0, description="absolute part of the onnxruntime-vs-PyTorch tolerance")
    rtol: float = Field(
        1e-4,
        ge=0,
        description="relative part: the export passes when max |onnx - torch| <= atol + rtol * max |torch output|",
    )


class ExportSpec(_Section):
    onnx: OnnxSpec | None = Field(default_factory=OnnxSpec)


class ReportSpec(_Section):
    enabled: bool = Field(True, description="write report.html into the run directory at the end of the run")


FINETUNE_MONITORS = ("val_accuracy", "val_loss")
DEFAULT_FINETUNE_STEPS = 200


def _finetune_early_stopping() -> EarlyStoppingSpec:
    # The loss, not the accuracy: on a validation side of a few samples per class, accuracy moves
    # in coarse steps and ties, and stops (and restores) too early.
    return EarlyStoppingSpec(monitor="val_loss", patience=5)


def _finetune_optimizer() -> OptimizerSpec:
    return OptimizerSpec(lr=1e-2)


class FinetuneCompareSpec(_Section):
    """``finetune.compare``: the table of whether pretraining paid off."""

    shots: list[Annotated[int, Field(gt=0)] | None] = Field(
        default_factory=lambda: [5, 20, None],
        min_length=1,
        description="labeled samples per class of each row; null: every labeled training sample",
    )
    random_init: bool = Field(True, description="fine-tune the same architecture from random init, same budget")
    linear_probe: bool = Field(True, description="a linear probe on the frozen pretrained features")
    draws: int = Field(1, gt=0, description="seeded draws of the labeled samples per row (mean and std over them)")

    @field_validator("shots")
    @classmethod
    def _distinct(cls, value: list[int | None]) -> list[int | None]:
        if len(set(value)) != len(value):
            raise ValueError("label counts must be distinct")
        return value


class FinetuneSpec(_Section):
    """``finetune:``: training a classifier (the run's encoder + a linear head) on labeled data."""

    mode: Literal["full", "frozen"] = Field("full", description="full: train encoder and head; frozen: the head only")
    steps: int | None = Field(
        None, gt=0, description=f"optimizer steps; give steps or epochs (neither: {DEFAULT_FINETUNE_STEPS} steps)"
    )
    epochs: float | None = Field(None, gt=0, description="passes over the labeled training side")
    batch_size: int = Field(32, gt=0)
    optimizer: OptimizerSpec = Field(
        default_factory=_finetune_optimizer, description="optimizer; its lr (default 1e-2 here) is the head's"
    )
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup: float = Field(0.0, ge=0, lt=1, description="fraction of steps with linear warmup")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine floor as a fraction of lr")
    grad_clip: float | None = Field(None, gt=0, description="max global gradient norm")
    encoder_lr_scale: float = Field(0.1, gt=0, le=1, description="encoder lr = optimizer.lr x this (mode full)")
    layer_decay: float | None = Field(
        None,
        gt=0,
        le=1,
        description="layer-wise lr decay for transformer encoders: block i of L gets encoder lr x "
        "layer_decay^(L + 1 - i), embeddings i = 0; null: off",
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weights: Literal["balanced"] | None = Field(
        None, description="balanced: weight each class's loss by N / (C x its count); null: equal"
    )
    shots: int | None = Field(None, gt=0, description="labeled samples per class, drawn with seed; null: all")
    seed: int | None = Field(None, ge=0, description="seed of draws, splits, head and data order; null: the recipe's")
    validation_fraction: float = Field(
        0.2, ge=0, lt=1, description="share of each class of the labeled training side held out for early stopping"
    )
    early_stopping: EarlyStoppingSpec | None = Field(
        default_factory=_finetune_early_stopping,
        description=f"monitor {' or '.join(FINETUNE_MONITORS)}; null: train every step",
    )
    validate_every: int = Field(20, gt=0, description="steps between validations")
    checkpoint_every: int = Field(50, gt=0, description="steps between checkpoints")
    log_every: int = Field(10, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] | None = Field(None, description="null: train.precision")
    device: str | None = Field(None, pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="null: train.device")
    compile: bool | None = Field(None, description="null: train.compile")
    compare: FinetuneCompareSpec | None = Field(
        default_factory=FinetuneCompareSpec, description="the comparison table; null: skip it"
    )

    @field_validator("optimizer", mode="before")
    @classmethod
    def _head_lr(cls, value: Any) -> Any:
        """``optimizer: {weight_decay: 0.05}`` keeps this section's lr (1e-2), not ``train``'s default."""
        if isinstance(value, dict) and "lr" not in value:
            return {**value, "lr": _finetune_optimizer().lr}
        return value

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _monitor_validation_loss(cls, value: Any) -> Any:
        """``early_stopping: {patience: 3}`` watches val_loss, as the default does (not the spec's own ``loss``)."""
        if isinstance(value, dict) and "monitor" not in value:
            return {**value, "monitor": _finetune_early_stopping().monitor}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FinetuneSpec:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give either steps or epochs, not both")
        errors = []
        if self.early_stopping is not None and self.early_stopping.monitor not in FINETUNE_MONITORS:
            errors.append(
                ("early_stopping", self.early_stopping.monitor, f"monitor must be one of {FINETUNE_MONITORS}")
            )
        if self.early_stopping is not None and self.validation_fraction == 0:
            message = "is 0, so early_stopping has nothing to watch: give a fraction, or early_stopping: null"
            errors.append(("validation_fraction", 0, message))
        if errors:
            raise field_errors("FinetuneSpec", errors)
        return self


class RecipeModel(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="run name")
    description: str = ""
    seed: int = Field(0, ge=0, lt=2**32, description="seed of every random generator (0 to 2**32 - 1)")
    requires: list[str] = Field(default_factory=list, description="plugins the recipe needs")
    data: DataSpec
    augment: list[ComponentSpec] = Field(default_factory=list)
    encoder: ComponentSpec | None = Field(
        None, description=f"the encoder (or give several under encoders); it is the encoder '{DEFAULT_ENCODER_KEY}'"
    )
    encoders: dict[str, ComponentSpec] | None = Field(
        None, description="one encoder per part of a multimodal batch, e.g. {image: ..., text: ...}"
    )
    objectives: list[ObjectiveSpec] = Field(min_length=1)
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    export: ExportSpec | None = None
    report: ReportSpec = Field(default_factory=ReportSpec)
    finetune: FinetuneSpec = Field(
        default_factory=FinetuneSpec, description="options of `sslhub finetune` (not used by pretraining)"
    )

    @model_validator(mode="after")
    def _one_encoder_section(self) -> RecipeModel:
        given = self.model_fields_set & {"encoder", "encoders"}
        nulls = [key for key in sorted(given) if getattr(self, key) is None]
        if nulls:
            message = "is null: give the encoder (name: ...) under encoder:, or one per modality part under encoders:"
            raise field_errors("RecipeModel", [(key, None, message) for key in nulls])
        if given == {"encoder", "encoders"}:
            message = "give either encoder (one) or encoders (one per modality part), not both"
            raise field_errors("RecipeModel", [("encoders", self.encoders, message)])
        if not given:
            message = "required field is missing (or give encoders:, one per modality part)"  # as resolve_recipe
            raise field_errors("RecipeModel", [("encoder", None, message)])
        if self.encoders is not None and not self.encoders:
            raise field_errors("RecipeModel", [("encoders", {}, "is empty: give one encoder per modality part")])
        if self.encoders is not None and DEFAULT_ENCODER_KEY in self.encoders:
            message = f"'{DEFAULT_ENCODER_KEY}' is the key of encoder:; name the encoders: keys otherwise"
            raise field_errors("RecipeModel", [("encoders", self.encoders, message)])
        return self

    def encoder_specs(self) -> dict[str, tuple[PathKey, ComponentSpec]]:
        """Every encoder by key with its recipe path: ``encoder:`` is the key ``default``."""
        if self.encoders is None:
            assert self.encoder is not None
            return {DEFAULT_ENCODER_KEY: (("encoder",), self.encoder)}
        return {key: (("encoders", key), spec) for key, spec in self.encoders.items()}


@dataclass
class ResolvedComponent:
    """A recipe entry bound to its registered component and validated parameters."""

    component: Component
    params: Params
    path: str
    weight: float = 1.0
    start_step: int = 0
    #: objectives: the encoder key they train (None: an objective with encoder slots gets all of them).
    encoder_key: str | None = None

    def build(self, context: Any) -> Any:
        return self.component.factory(self.params, context)


@dataclass
class ResolvedRecipe:
    """Everything needed to build a run, validated."""

    model: RecipeModel
    source: RecipeSource
    modality: ResolvedComponent
    augmentations: list[ResolvedComponent]
    encoders: dict[str, ResolvedComponent]
    objectives: list[ResolvedComponent]
    catalog: Catalog = field(repr=False)
    #: ``evaluate.data.source`` validated against the modality's source type, or None.
    eval_source: Params | None = None

    @property
    def train(self) -> TrainSpec:
        return self.model.train

    def resolved_dict(self) -> dict[str, Any]:
        """The recipe with every default filled in (what the run directory stores)."""
        data = self.model.model_dump(mode="json")
        data["train"]["optimizer"] = self.model.train.optimizer.options_dict()
        # Only what the recipe or a --set chose: a run keeps no stale copy of today's fine-tuning defaults.
        finetune = self.model.finetune.model_dump(mode="json", exclude_unset=True)
        if finetune:
            data["finetune"] = finetune
        else:
            data.pop("finetune")
        data["data"] = {"modality": self.modality.component.name, **self.modality.params.model_dump(mode="json")}
        data["augment"] = [{"name": a.component.name, **a.params.model_dump(mode="json")} for a in self.augmentations]
        specs = {
            key: {"name": e.component.name, **e.params.model_dump(mode="json")} for key, e in self.encoders.items()
        }
        # Written back in the recipe's own form: ``encoder:`` is the mapping's default key.
        if list(specs) == [DEFAULT_ENCODER_KEY]:
            data["encoder"] = specs[DEFAULT_ENCODER_KEY]
            data.pop("encoders", None)
        else:
            data["encoders"] = specs
            data.pop("encoder", None)
        data["objectives"] = [
            {
                "name": o.component.name,
                "weight": o.weight,
                "start_step": o.start_step,
                # With one encoder, an objective trains it without naming it.
                **({"encoder": o.encoder_key} if o.encoder_key and len(specs) > 1 else {}),
                **o.params.model_dump(mode="json"),
            }
            for o in self.objectives
        ]
        if self.eval_source is not None:
            data["evaluate"]["data"]["source"] = self.eval_source.model_dump(mode="json")
        return data

    def resolved_yaml(self) -> str:
        return yaml.safe_dump(self.resolved_dict(), sort_keys=False)

    def fingerprint(self) -> str:
        """A digest of what pretraining uses (``finetune:`` left out: it changes no pretraining step)."""
        data = self.resolved_dict()
        data.pop("finetune", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _issues_from_validation(
    source: RecipeSource,
    error: ValidationError,
    prefix: PathKey,
    component: str = "",
    schema: type[BaseModel] | None = None,
) -> list[RecipeIssue]:
    """``error`` as recipe issues under ``prefix``; ``schema`` (the validated model) gives "did you mean"."""
    issues = []
    for item in error.errors():
        path = _without_union_tags(source.data, (*prefix, *item["loc"]))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = f"unknown field{f' for {component}' if component else ''}"
            message += _did_you_mean(item["loc"], schema)
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if item["type"] == "missing":
            message = "required field is missing"
        issues.append(RecipeIssue(source.location(path), format_path(path), message))
    return issues


def _did_you_mean(loc: tuple[Any, ...], schema: type[BaseModel] | None) -> str:
    """``; did you mean 'x'?`` when a field of ``schema`` at ``loc``'s level is close to the unknown name."""
    import difflib

    model = schema
    for part in loc[:-1]:
        field_info = model.model_fields.get(part) if model is not None and isinstance(part, str) else None
        annotation = field_info.annotation if field_info is not None else None
        model = _section_model(annotation)
    if model is None or not isinstance(loc[-1], str):
        return ""
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The section model of a field's annotation: ``EarlyStoppingSpec`` for ``EarlyStoppingSpec | None`` too."""
    candidates = typing.get_args(annotation) or (annotation,)
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    return models[0] if len(models) == 1 else None


def _without_union_tags(data: Any, path: PathKey) -> PathKey:
    """``path`` without the ``type`` values pydantic inserts for discriminated unions (``source.csv.path``).

    A part is such a tag when the mapping reached so far has no key of that name but its
    ``type`` is that name; the recipe has no such key, so the path names what the user wrote.
    """
    kept: list[str | int] = []
    node = data
    for part in path:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue
        kept.append(part)
        node = _child(node, part)
    return tuple(kept)


def _child(node: Any, part: str | int) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and -len(node) <= part < len(node):
        return node[part]
    return None


def resolve_recipe(source: RecipeSource, catalog: Catalog) -> ResolvedRecipe:
    """Validate ``source`` fully and bind it to components of ``catalog``.

    Raises:
        RecipeError: with every problem found, each as ``FILE:LINE: field.path: message``.
    """
    model = _validated_structure(source)
    issues: list[RecipeIssue] = []
    issues += _check_requirements(source, model, catalog)
    issues += _check_objective_weights_and_starts(source, model)
    binder = _Binder(catalog, source, issues)
    modality = binder.bind("modality", model.data, ("data",), "modality")
    augmentations = [binder.bind("augmentation", spec, ("augment", i)) for i, spec in enumerate(model.augment)]
    encoders = {key: binder.bind("encoder", spec, path) for key, (path, spec) in model.encoder_specs().items()}
    objectives = [binder.bind_objective(spec, index) for index, spec in enumerate(model.objectives)]
    if modality is not None:
        issues += _modality_mismatches(source, modality, [*augmentations, *encoders.values(), *objectives])
        issues += _issues_at(source, ("data",), part_problems(modality.component, modality.params, catalog))
        issues += _modality_capability_issues(source, modality, [*augmentations, *objectives])
    for index, resolved in enumerate(objectives):
        if resolved is not None:
            issues.extend(_check_objective_encoders(source, resolved, encoders, index))
    eval_source = None
    if modality is not None and not issues:
        # Reading files is worth it only once every field is valid.
        # The probes use the modality's own split unless evaluate.data names another source.
        own_split_needs = 1 if model.evaluate.data is not None else largest_shot(model.evaluate)
        issues += _issues_at(source, ("data",), modality.params.file_problems(min_train_per_class=own_split_needs))
        eval_source = _resolve_eval_data(source, model.evaluate, modality.component, issues)
    if issues:
        raise RecipeError(issues)
    return ResolvedRecipe(model, source, modality, augmentations, encoders, objectives, catalog, eval_source)


def _validated_structure(source: RecipeSource) -> RecipeModel:
    """Pass 1: the core sections, or every structural problem at once."""
    try:
        return RecipeModel.model_validate(source.data)
    except ValidationError as exc:
        issues = _issues_from_validation(source, exc, (), schema=RecipeModel)
        if "encoder" not in source.data and "encoders" not in source.data:
            # The model's own check of the encoder sections runs only once every field is valid.
            message = "required field is missing (or give encoders:, one per modality part)"
            issues.append(RecipeIssue(source.location(("encoder",)), "encoder", message))
        raise RecipeError(issues) from None


class _Binder:
    """Pass 2: each component reference bound to its registry entry and its own validated ``Params``.

    Problems are appended to ``issues`` and the reference binds to None, so every problem is found.
    """

    #: recipe keys of an objective that belong to the engine, not to the objective's parameters.
    OBJECTIVE_ENGINE_KEYS = ("weight", "start_step", "encoder")

    def __init__(self, catalog: Catalog, source: RecipeSource, issues: list[RecipeIssue]):
        self.catalog, self.source, self.issues = catalog, source, issues

    def bind(
        self, kind: str, spec: _Open, path: PathKey, key_field: str = "name", engine_keys: tuple[str, ...] = ()
    ) -> ResolvedComponent | None:
        registry = self.catalog.registry(kind)
        name = getattr(spec, key_field)
        if name not in registry:
            where = (*path, key_field)
            self.issues.append(
                RecipeIssue(self.source.location(where), format_path(where), registry.unknown_message(name))
            )
            return None
        component = registry.get(name)
        raw = {k: v for k, v in (spec.model_extra or {}).items() if k not in engine_keys}
        try:
            params = component.params.model_validate(raw)
        except ValidationError as exc:
            self.issues.extend(_issues_from_validation(self.source, exc, path, f"{kind} '{name}'", component.params))
            return None
        return ResolvedComponent(component, params, format_path(path))

    def bind_objective(self, spec: Any, index: int) -> ResolvedComponent | None:
        bound = self.bind("objective", spec, ("objectives", index), engine_keys=self.OBJECTIVE_ENGINE_KEYS)
        if bound is not None:
            bound.weight, bound.start_step, bound.encoder_key = spec.weight, spec.start_step, spec.encoder
        return bound


def _modality_mismatches(
    source: RecipeSource, modality: ResolvedComponent, components: list[ResolvedComponent | None]
) -> list[RecipeIssue]:
    """Components that do not accept the recipe's modality (a composite one, image_text, lists its parts)."""
    accepted_here = {modality.component.name, *modality.component.modalities}
    issues = []
    for resolved in components:
        if resolved is not None and not any(resolved.component.supports(m) for m in accepted_here):
            accepted = ", ".join(sorted(resolved.component.modalities))
            message = (
                f"{resolved.component.kind} '{resolved.component.name}' does not accept "
                f"modality '{modality.component.name}' (it accepts: {accepted})"
            )
            issues.append(RecipeIssue(source.location(_parse_path(resolved.path)), resolved.path, message))
    return issues


def _modality_capability_issues(
    source: RecipeSource, modality: ResolvedComponent, components: list[ResolvedComponent | None]
) -> list[RecipeIssue]:
    """Components whose parameters need a modality capability (:meth:`Params.modality_needs`) it lacks."""
    declared = modality_capabilities(modality.component)
    issues = []
    for resolved in components:
        if resolved is None:
            continue
        for capability in sorted(resolved.params.modality_needs() - declared):
            message = (
                f"{resolved.component.kind} '{resolved.component.name}' with these settings needs "
                f"{MODALITY_PROPERTY_MEANINGS.get(capability, capability)}, but modality "
                f"'{modality.component.name}' does not declare provides=['{capability}']"
            )
            issues.append(RecipeIssue(source.location(_parse_path(resolved.path)), resolved.path, message))
    return issues


def _issues_at(source: RecipeSource, prefix: PathKey, problems: list[tuple[PathKey, str]]) -> list[RecipeIssue]:
    return [RecipeIssue(source.location((*prefix, *path)), format_path((*prefix, *path)), m) for path, m in problems]


def largest_shot(spec: EvaluateSpec) -> int:
    """The most probe-train samples per class the evaluation draws (its largest few-shot k; 1 without few-shot)."""
    return max(spec.few_shot.shots) if spec.enabled and spec.few_shot is not None else 1


def _resolve_eval_data(
    source: RecipeSource, evaluate: EvaluateSpec, modality: Component, issues: list[RecipeIssue]
) -> Params | None:
    """``evaluate.data.source`` validated and its files checked; problems go to ``issues``."""
    spec = evaluate.data
    if spec is None:
        return None
    prefix = ("evaluate", "data", "source")
    labeled, problems = validate_labeled_source(
        modality, spec.source, spec.test_fraction, spec.split_seed, largest_shot(evaluate)
    )
    issues += _issues_at(source, prefix, problems)
    return labeled


def validate_labeled_source(
    modality: Component, raw: Any, test_fraction: float, seed: int, min_train_per_class: int = 1
) -> tuple[Params | None, list[tuple[PathKey, str]]]:
    """Validate a labeled source mapping against the type of ``modality``'s ``data.source``.

    Returns:
        the validated source (``None`` when invalid) and its problems as ``(path, message)``,
        paths relative to the source: field errors first, then what its files show
        (:meth:`sslhub.Params.file_problems` with this ``test_fraction``, ``seed`` and
        ``min_train_per_class``, the largest few-shot k of the evaluation).
    """
    from pydantic import TypeAdapter

    field_info = modality.params.model_fields.get("source")
    if field_info is None:
        return None, [((), f"modality '{modality.name}' has no data.source, so it takes no other labeled source")]
    try:
        labeled = TypeAdapter(Annotated[field_info.annotation, field_info]).validate_python(raw)
    except ValidationError as exc:
        tag = raw.get("type") if isinstance(raw, dict) else None
        problems = []
        for item in exc.errors():
            # A discriminated union puts the chosen type first in the location; the recipe has no such key.
            loc = item["loc"][1:] if item["loc"][:1] == (tag,) else item["loc"]
            message = "unknown field" if item["type"] == "extra_forbidden" else item["msg"]
            message = "required field is missing" if item["type"] == "missing" else message
            problems.append((tuple(loc), message.removeprefix("Value error, ")))
        return None, problems
    return labeled, labeled.file_problems(
        test_fraction=test_fraction, seed=seed, min_train_per_class=min_train_per_class
    )


def _check_objective_encoders(
    source: RecipeSource,
    objective: ResolvedComponent,
    encoders: dict[str, ResolvedComponent | None],
    index: int,
) -> list[RecipeIssue]:
    """The objective gets the encoders it asks for, and they give the features it needs.

    Sets ``objective.encoder_key`` when the recipe has one encoder and the objective names none.
    """
    path = ("objectives", index)
    name = objective.component.name
    slots = objective.component.encoder_slots
    if slots:
        missing = sorted(slots - set(encoders))
        if missing:
            return [
                RecipeIssue(
                    source.location(path),
                    format_path(path),
                    f"objective '{name}' needs encoders for {', '.join(sorted(slots))}; "
                    f"give them under encoders: (this recipe has no {', '.join(missing)})",
                )
            ]
        chosen = [encoders[slot] for slot in sorted(slots)]
    else:
        key = objective.encoder_key or (next(iter(encoders)) if len(encoders) == 1 else None)
        if key not in encoders:
            reason = "is missing" if key is None else f"'{key}' is not one of the encoders"
            return [
                RecipeIssue(
                    source.location((*path, "encoder")),
                    format_path((*path, "encoder")),
                    f"{reason}: objective '{name}' trains one encoder, so name it ({', '.join(sorted(encoders))})",
                )
            ]
        objective.encoder_key = key
        chosen = [encoders[key]]
    issues = []
    for encoder in chosen:
        if encoder is None:
            continue
        issues += [
            RecipeIssue(source.location(path), format_path(path), message)
            for message in capability_problems(name, objective.component.requires, encoder.component)
        ]
    return issues


def capability_problems(objective: str, requires: frozenset[str], encoder: Component) -> list[str]:
    """Why ``encoder`` lacks what objective ``objective`` requires: missing features, then properties."""
    missing = requires - encoder.provides
    features = sorted(missing & set(FEATURE_KINDS))
    declared = ", ".join(sorted(encoder.provides & set(FEATURE_KINDS)))
    problems = []
    if features:
        problems.append(
            f"objective '{objective}' needs {', '.join(features)} features, but "
            f"encoder '{encoder.name}' provides only {declared}"
        )
    for prop in sorted(missing & set(PROPERTY_MEANINGS)):
        problems.append(
            f"objective '{objective}' needs {PROPERTY_MEANINGS[prop]}, but encoder '{encoder.name}' does not declare "
            f"provides=['{prop}']; choose an encoder that does (`sslhub list encoders` shows what each provides)"
        )
    return problems


def _check_objective_weights_and_starts(source: RecipeSource, model: RecipeModel) -> list[RecipeIssue]:
    """Every objective can take part in training, and together they train something."""
    issues = []
    steps = model.train.steps
    if steps:
        for index, spec in enumerate(model.objectives):
            if spec.start_step and spec.start_step >= steps:
                path = ("objectives", index, "start_step")
                message = f"{spec.start_step} is not below train.steps ({steps}): this objective would never train"
                issues.append(RecipeIssue(source.location(path), format_path(path), message))
    if all(spec.weight == 0 for spec in model.objectives) and steps != 0:
        path = ("objectives", len(model.objectives) - 1, "weight")
        what = "the only objective has" if len(model.objectives) == 1 else "every objective has"
        message = f"{what} weight 0, so training would change nothing (train.steps: 0 evaluates the random init)"
        issues.append(RecipeIssue(source.location(path), format_path(path), message))
    return issues


def forget_unused_optimizer_options(data: dict[str, Any]) -> None:
    """Drop from a saved recipe's ``train.optimizer`` the options its optimizer ignores.

    Run directories written before the recipe refused such options hold every option; they
    were defaults the run never used, so resuming or evaluating such a run must not fail on them.
    """
    optimizer = (data.get("train") or {}).get("optimizer")
    if isinstance(optimizer, dict) and optimizer.get("name", "adamw") in OPTIMIZER_OPTIONS:
        used = OPTIMIZER_OPTIONS[optimizer.get("name", "adamw")]
        for key in [key for key in optimizer if key not in used]:
            del optimizer[key]


def _check_requirements(source: RecipeSource, model: RecipeModel, catalog: Catalog) -> list[RecipeIssue]:
    """One issue for each entry of ``requires:`` that no loaded plugin satisfies."""
    from packaging.requirements import InvalidRequirement, Requirement

    installed, unusable = _plugin_availability(catalog)
    issues = []
    for index, text in enumerate(model.requires):
        path = ("requires", index)
        try:
            problem = _requirement_problem(Requirement(text), text, installed, unusable)
        except InvalidRequirement as exc:
            problem = f"invalid requirement: {exc}"
        if problem:
            issues.append(RecipeIssue(source.location(path), format_path(path), problem))
    return issues


def _plugin_availability(catalog: Catalog) -> tuple[dict[str, str], dict[str, str]]:
    """``(installed, unusable)``: normalised plugin and distribution names -> version for the plugins
    that loaded ("" when unversioned), and -> why it cannot serve for those installed but blocked or broken."""
    installed: dict[str, str] = {}
    unusable: dict[str, str] = {}
    for record in catalog.plugins:
        names = [_normalise(n) for n in (record.distribution, record.name) if n]
        if record.errors or record.blocked:
            why = (
                f"is blocked (-p no:{record.name})"
                if record.blocked
                else f"is installed but failed to load: {'; '.join(record.errors)} (see `sslhub plugins`)"
            )
            for name in names:
                unusable.setdefault(name, f"{record.label()} {why}")
            continue
        for name in names:
            installed.setdefault(name, record.version)
    return installed, unusable


def _requirement_problem(
    requirement: Requirement, text: str, installed: dict[str, str], unusable: dict[str, str]
) -> str | None:
    """Why ``requirement`` (written ``text`` in the recipe) is not met, or ``None`` when it is."""
    name = _normalise(requirement.name)
    if name not in installed:
        return unusable.get(name, f"plugin '{requirement.name}' is not installed; pip install '{text}'")
    version = installed[name]
    if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
        return (
            f"plugin '{requirement.name}' {version or '(unversioned)'} is installed, but the recipe needs "
            f"{requirement.specifier}; pip install '{text}'"
        )
    return None


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _parse_path(text: str) -> PathKey:
    parts: list[str | int] = []
    for chunk in text.replace("]", "").split("."):
        for i, piece in enumerate(chunk.split("[")):
            parts.append(int(piece) if i else piece)
    return tuple(p for p in parts if p != "")
