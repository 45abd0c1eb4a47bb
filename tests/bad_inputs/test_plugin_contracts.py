"""A plugin component that fails at run time is named, with its plugin and the contract it broke.

Both cases train the toy recipe with a ``-p`` plugin whose objective misbehaves: one returns a
bare tensor instead of ``ObjectiveOutput``, one raises inside its own code.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from toy_runs import BLOCK_BUILTINS, RECIPE, sslhub

BROKEN_PLUGIN = """
import torch
from sslhub import Objective, Params, hookimpl


class TemperatureParams(Params):
    temperature: float = 0.2


class BareTensor(Objective):
    def __init__(self, params, context):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, views, encoder):
        return encoder(views[0]).pooled.pow(2).mean() * self.scale


class RaisesInside(BareTensor):
    def forward(self, views, encoder):
        return self.lookup(views)

    def lookup(self, views):
        return {}["missing_key"]


@hookimpl
def sslhub_register_objectives(registry):
    registry.register("bare_tensor", BareTensor, params=TemperatureParams)
    registry.register("raises_inside", RaisesInside, params=TemperatureParams)
"""


@pytest.mark.parametrize(
    ("objective", "expected"),
    [
        (
            "bare_tensor",
            [
                "objective 'bare_tensor' (broken_objectives.BareTensor, module 'broken_objectives') broke the "
                "Objective contract",
                "but returned Tensor",
            ],
        ),
        ("raises_inside", ["KeyError: 'missing_key'", "raised in module 'broken_objectives', at ", "in lookup"]),
    ],
)
def test_a_failing_plugin_objective_is_named_with_its_plugin(tmp_path: Path, objective: str, expected: list[str]):
    (tmp_path / "broken_objectives.py").write_text(BROKEN_PLUGIN)
    result = sslhub(
        "run", str(RECIPE), "-p", "toy_plugin", "-p", str(tmp_path / "broken_objectives.py"), *BLOCK_BUILTINS,
        "--out", str(tmp_path / "run"), "--set", f"objectives.0.name={objective}",
        "--set", "export=null", "--set", "train.steps=2", "--progress", "off",
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
