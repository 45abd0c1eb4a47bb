"""Building a resolved recipe's components on a device: modality, encoders, objectives, augmentations.

Every build is deterministic in the recipe's seed, so the random-init baseline of an
evaluation can be rebuilt at any time and equals the run's starting point.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sslhub import distributed
from sslhub.blame import plugin_label
from sslhub.components import (
    DEFAULT_ENCODER_KEY,
    Batch,
    BuildContext,
    Encoder,
    EncoderSet,
    Modality,
    ModalityInfo,
    Objective,
    ObjectiveOutput,
)
from sslhub.errors import ComponentContractError, SSLHubError
from sslhub.recipe import ResolvedRecipe
from sslhub.resume import seed_everything


def select_device(requested: str) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise SSLHubError("train.device is cuda but no CUDA device is available; use device: auto or cpu")
    if requested == "cuda" and distributed.is_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(requested)


class TrainingModule(nn.Module):
    """Encoders plus objectives; ``forward`` returns the weighted total loss (what DDP wraps).

    Args:
        encoder: the run's encoders (one key, ``default``, for a recipe's ``encoder:``).
        objectives: the recipe's objectives, in order.
        names: per objective, its name in logs and reports.
        weights, starts: per objective, ``weight`` and ``start_step``.
        encoder_keys: per objective, the encoder key it trains, or None for the whole set (encoder slots).
    """

    def __init__(
        self,
        encoder: EncoderSet,
        objectives: list[Objective],
        names: list[str],
        weights: list[float],
        starts: list[int],
        encoder_keys: list[str | None],
    ):
        super().__init__()
        self.encoder = encoder
        self.objectives = nn.ModuleList(objectives)
        self.names, self.weights, self.starts, self.encoder_keys = names, weights, starts, encoder_keys
        self._register_load_state_dict_pre_hook(self._upgrade_one_encoder_checkpoint)

    def _upgrade_one_encoder_checkpoint(self, state: dict[str, Any], prefix: str, *args: Any) -> None:
        """Checkpoints written before ``encoder:`` became the key ``default`` store ``encoder.W``, not
        ``encoder.default.W``: rename those keys in place so such runs still resume, evaluate and export."""
        old, new = f"{prefix}encoder.", f"{prefix}encoder.{DEFAULT_ENCODER_KEY}."
        if list(self.encoder) != [DEFAULT_ENCODER_KEY] or any(key.startswith(new) for key in state):
            return
        for key in [k for k in state if k.startswith(old)]:
            state[new + key.removeprefix(old)] = state.pop(key)

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
        """The weighted total loss (a scalar) and ``{NAME/loss, NAME/METRIC: detached value}``."""
        total: Tensor | None = None
        logged: dict[str, Any] = {}
        for index, objective in enumerate(self.objectives):
            if not active[index]:
                continue
            output = objective(views[: objective.num_views], self.encoder.for_objective(self.encoder_keys[index]))
            key = self.names[index]
            _check_objective_output(output, key, objective)
            logged[f"{key}/loss"] = output.loss.detach()
            for name, value in output.metrics.items():
                logged[f"{key}/{name}"] = value.detach() if isinstance(value, Tensor) else value
            weighted = output.loss.float() * self.weights[index]
            total = weighted if total is None else total + weighted
        if total is None:
            raise SSLHubError("no objective is active: check objectives[*].start_step")
        return total, logged


def _check_objective_output(output: Any, name: str, objective: Objective) -> None:
    """An objective that returns something else than an :class:`ObjectiveOutput` is named with its plugin."""
    loss = getattr(output, "loss", None)
    if isinstance(output, ObjectiveOutput) and isinstance(loss, Tensor) and loss.dim() == 0:
        return
    got = type(output).__name__ if not isinstance(output, ObjectiveOutput) else f"loss of shape {tuple(loss.shape)}"
    if isinstance(output, ObjectiveOutput) and not isinstance(loss, Tensor):
        got = f"a loss of type {type(loss).__name__}"
    cls = type(objective)
    raise ComponentContractError(
        f"objective '{name}' ({cls.__module__}.{cls.__qualname__}, {plugin_label(cls.__module__)}) broke the "
        f"Objective contract: forward must return sslhub.ObjectiveOutput(loss=<0-d tensor>, metrics={{...}}), "
        f"but returned {got}"
    )


def _check_modality_info(modality: Modality, name: str) -> None:
    """A modality whose ``info()`` is not a :class:`ModalityInfo` (a plain dict, as it once was) is named with its plugin."""
    info = modality.info()
    if isinstance(info, ModalityInfo):
        return
    cls = type(modality)
    raise ComponentContractError(
        f"modality '{name}' ({cls.__module__}.{cls.__qualname__}, {plugin_label(cls.__module__)}) broke the "
        f"Modality contract: info() must return sslhub.ModalityInfo(...), but returned {type(info).__name__}"
    )


class ComponentBuilder:
    """Builds a recipe's components on ``device``, for ``run_dir``.

    Args:
        recipe: a validated recipe.
        run_dir: passed to the components (where they may write artifacts).
        device: where the modules are placed.
    """

    def __init__(self, recipe: ResolvedRecipe, run_dir: Path, device: torch.device):
        self.recipe, self.run_dir, self.device = recipe, Path(run_dir), device

    @property
    def encoder_keys(self) -> list[str | None]:
        """Per objective: the encoder key it trains, or None for the whole set (an objective with encoder slots)."""
        return [o.encoder_key for o in self.recipe.objectives]

    @property
    def objective_names(self) -> list[str]:
        """Per objective: its component name, with its position appended where a name repeats."""
        names = [o.component.name for o in self.recipe.objectives]
        return [f"{name}{index}" if names.count(name) > 1 else name for index, name in enumerate(names)]

    def modality(self) -> Modality:
        seed_everything(self.recipe.model.seed)
        context = BuildContext(
            modality_name=self.recipe.modality.component.name,
            run_dir=self.run_dir,
            seed=self.recipe.model.seed,
            device=self.device,
            catalog=self.recipe.catalog,
        )
        modality = self.recipe.modality.build(context)
        modality.prepare(self.run_dir)
        _check_modality_info(modality, self.recipe.modality.component.name)
        return modality

    def encoders(self, modality: Modality) -> EncoderSet:
        """Deterministic in the seed, so the random-init baseline can be rebuilt at any time."""
        seed_everything(self.recipe.model.seed)
        context = self._context(modality)
        return EncoderSet({key: resolved.build(context) for key, resolved in self.recipe.encoders.items()}).to(
            self.device
        )

    def objectives(self, modality: Modality, encoders: EncoderSet, prepare: bool = True) -> list[Objective]:
        """The recipe's objectives on ``encoders``; ``prepare=False`` when a checkpoint will fill their state."""
        objectives = []
        for resolved in self.recipe.objectives:
            own = encoders.for_objective(resolved.encoder_key)
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
            if prepare:
                objective.prepare(modality, own)
            objectives.append(objective)
        return objectives

    def augmentations(self, modality: Modality) -> nn.Sequential:
        context = self._context(modality)
        return nn.Sequential(*[a.build(context) for a in self.recipe.augmentations]).to(self.device)

    def training_module(self, encoders: EncoderSet, objectives: list[Objective]) -> TrainingModule:
        return TrainingModule(
            encoders,
            objectives,
            self.objective_names,
            [o.weight for o in self.recipe.objectives],
            [o.start_step for o in self.recipe.objectives],
            self.encoder_keys,
        ).to(self.device)

    def _context(self, modality: Modality, encoder: Encoder | EncoderSet | None = None) -> BuildContext:
        return BuildContext(
            modality=modality,
            modality_name=self.recipe.modality.component.name,
            run_dir=self.run_dir,
            seed=self.recipe.model.seed,
            device=self.device,
            encoder=encoder,
            catalog=self.recipe.catalog,
        )
