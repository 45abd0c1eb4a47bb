"""Optimizers and schedules built from recipe sections."""

import math

import torch
from torch import nn

from sslhub.optim import LARS, build_optimizer, build_schedule, parameter_groups
from sslhub.recipe import OptimizerSpec, TrainSpec


def test_norms_and_biases_get_no_weight_decay():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    groups = parameter_groups(model, OptimizerSpec(weight_decay=0.1))
    decayed = {id(p) for p in groups[0]["params"]}
    assert decayed == {id(model[0].weight)}
    assert groups[1]["weight_decay"] == 0.0 and len(groups[1]["params"]) == 3
    everything = parameter_groups(model, OptimizerSpec(weight_decay=0.1, decay_norm_and_bias=True))
    assert len(everything) == 1 and len(everything[0]["params"]) == 4


def test_warmup_then_cosine_to_floor():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = build_schedule(optimizer, TrainSpec(steps=100, warmup=0.1, min_lr_ratio=0.1), total_steps=100)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert math.isclose(rates[0], 0.1) and math.isclose(rates[9], 1.0)
    assert math.isclose(rates[10], 1.0) and rates[55] < rates[30] < rates[10]
    assert math.isclose(optimizer.param_groups[0]["lr"], 0.1, rel_tol=1e-6)


def test_each_optimizer_minimises_a_quadratic():
    for name in ("adamw", "sgd", "lars"):
        torch.manual_seed(0)
        model = nn.Linear(8, 1, bias=False)
        spec = (
            OptimizerSpec(name=name, lr=0.05)
            if name != "lars"
            else OptimizerSpec(name=name, lr=1.0, trust_coefficient=0.05)
        )
        optimizer = build_optimizer(model, spec)
        inputs = torch.randn(64, 8)
        targets = inputs @ torch.arange(8.0).unsqueeze(1)
        first = None
        for _ in range(100):
            loss = (model(inputs) - targets).pow(2).mean()
            first = first if first is not None else loss.item()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert loss.item() < first * 0.2, name


def test_lars_scales_step_by_trust_ratio():
    weight = nn.Parameter(torch.full((4,), 2.0))
    optimizer = LARS([weight], lr=1.0, momentum=0.0, trust_coefficient=0.01)
    weight.grad = torch.full((4,), 10.0)
    optimizer.step()
    # trust = 0.01 * ||w|| / ||g|| = 0.01 * 4 / 20; step = trust * g = 0.02 per element
    torch.testing.assert_close(weight.detach(), torch.full((4,), 2.0 - 0.02))
