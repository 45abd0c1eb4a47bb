"""Optimizers and learning-rate schedules the recipe can name."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # the recipe validates its optimizer options against OPTIMIZER_OPTIONS below
    from sslhub.recipe import OptimizerSpec, TrainSpec

_COMMON_OPTIONS = frozenset({"name", "lr", "weight_decay", "decay_norm_and_bias"})
#: the ``train.optimizer`` keys each optimizer uses; the recipe refuses any other (it would be ignored).
OPTIMIZER_OPTIONS: dict[str, frozenset[str]] = {
    "adamw": _COMMON_OPTIONS | {"betas"},
    "sgd": _COMMON_OPTIONS | {"momentum"},
    "lars": _COMMON_OPTIONS | {"momentum", "trust_coefficient"},
}


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling, for large-batch contrastive training.

    Each parameter's step is scaled by ``trust_coefficient * ||w|| / ||g + wd * w||``;
    parameters in groups with ``lars_exclude=True`` (norms, biases) take plain SGD steps.

    References:
        You, Gitman, Ginsburg. Large Batch Training of Convolutional Networks, 2017.
    """

    def __init__(
        self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, trust_coefficient: float = 0.001
    ):
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient, lars_exclude=False
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if group["weight_decay"]:
                    grad = grad.add(param, alpha=group["weight_decay"])
                if not group["lars_exclude"]:
                    param_norm, grad_norm = torch.norm(param), torch.norm(grad)
                    trust = torch.where(
                        (param_norm > 0) & (grad_norm > 0),
                        group["trust_coefficient"] * param_norm / grad_norm,
                        torch.ones_like(param_norm),
                    )
                    grad = grad.mul(trust)
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(grad).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                param.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def parameter_groups(model: nn.Module, spec: OptimizerSpec) -> list[dict]:
    """Split parameters so norms and biases (ndim <= 1) get no weight decay unless asked."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 and not spec.decay_norm_and_bias else decay).append(param)
    groups = [{"params": decay, "weight_decay": spec.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lars_exclude": True})
    return groups


def build_optimizer(model: nn.Module, spec: OptimizerSpec, fused: bool = False) -> torch.optim.Optimizer:
    groups = parameter_groups(model, spec)
    if spec.name == "adamw":
        for group in groups:
            group.pop("lars_exclude", None)
        return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, fused=fused or None)
    if spec.name == "sgd":
        for group in groups:
            group.pop("lars_exclude", None)
        return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum)
    return LARS(groups, lr=spec.lr, momentum=spec.momentum, trust_coefficient=spec.trust_coefficient)


def build_schedule(optimizer: torch.optim.Optimizer, train: TrainSpec, total_steps: int):
    warmup_steps = int(round(train.warmup * total_steps))

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if train.schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return train.min_lr_ratio + (1.0 - train.min_lr_ratio) * cosine

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
