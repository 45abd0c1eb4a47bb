"""Bad recipes and ``--set`` values: ``sslhub validate`` refuses each, naming the file, line and field.

Each row edits the toy recipe (``edits``: text replacements, or ``text``: a whole file) and/or
adds ``--set`` overrides, runs ``sslhub validate`` in process, and checks the exit code and that
every expected line appears in the message, with no traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from sslhub.cli import main

DATA = Path(__file__).resolve().parent.parent / "data"
TOY = (DATA / "toy_recipe.yaml").read_text()
BOMB = "".join(
    [
        "name: bomb\n",
        "a0: &a0 [x, x, x, x, x, x, x, x, x]\n",
        *(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)),
    ]
)


@dataclass(frozen=True)
class Case:
    id: str
    bug: str
    expected: tuple[str, ...]
    edits: tuple[tuple[str, str], ...] = ()
    overrides: tuple[str, ...] = ()
    text: str | None = None
    exit_code: int = 2


CASES = [
    Case(
        "boolean_lr",
        "lr: true trained with lr 1.0",
        ("recipe.yaml:16: train.optimizer.lr: expected a number, got a boolean (true/false/yes/no)",),
        edits=(("lr: 1.0e-2", "lr: true"),),
    ),
    Case(
        "boolean_steps",
        "steps: yes ran one step",
        ("recipe.yaml:14: train.steps: expected a number, got a boolean",),
        edits=(("steps: 60", "steps: yes"),),
    ),
    Case(
        "boolean_component_parameter",
        "(component parameters are as strict as the core sections)",
        ("recipe.yaml:12: objectives[0].temperature: expected a number, got a boolean",),
        edits=(("temperature: 0.2", "temperature: on"),),
    ),
    Case(
        "infinite_lr",
        "lr: .inf passed validate",
        ("recipe.yaml:16: train.optimizer.lr: Input should be a finite number",),
        edits=(("lr: 1.0e-2", "lr: .inf"),),
    ),
    Case(
        "nan_component_parameter",
        "(non-finite floats are refused in component parameters too)",
        ("recipe.yaml:12: objectives[0].temperature: Input should be a finite number",),
        edits=(("temperature: 0.2", "temperature: .nan"),),
    ),
    Case(
        "betas_out_of_range",
        "betas: [1.5, -1] passed validate, then 'Invalid beta parameter' naming no field",
        (
            "recipe.yaml:16: train.optimizer.betas[0]: Input should be less than 1",
            "recipe.yaml:16: train.optimizer.betas[1]: Input should be greater than or equal to 0",
        ),
        edits=(("lr: 1.0e-2}", "lr: 1.0e-2, betas: [1.5, -1]}"),),
    ),
    Case(
        "seed_beyond_int64",
        "seed 2**70 passed validate, then 'Overflow when unpacking long long'",
        ("recipe.yaml:2: seed: Input should be less than 4294967296",),
        edits=(("seed: 0", f"seed: {2**70}"),),
    ),
    Case(
        "component_integer_beyond_int64",
        "(any integer beyond 64 bits overflows in torch)",
        ("recipe.yaml:5: data.samples: integer out of range: must be between",),
        edits=(("samples: 512", f"samples: {2**70}"),),
    ),
    Case(
        "start_step_beyond_steps",
        "an objective starting after the last step passed validate and never trained",
        (
            "recipe.yaml:13: objectives[0].start_step: 60 is not below train.steps (60): "
            "this objective would never train",
        ),
        edits=(("temperature: 0.2", "temperature: 0.2\n    start_step: 60"),),
    ),
    Case(
        "only_objective_weight_zero",
        "weight: 0 on the only objective trained nothing without a word",
        ("recipe.yaml:13: objectives[0].weight: the only objective has weight 0, so training would change nothing",),
        edits=(("temperature: 0.2", "temperature: 0.2\n    weight: 0"),),
    ),
    Case(
        "option_the_optimizer_ignores",
        "momentum with adamw was silently dropped",
        (
            "recipe.yaml:16: train.optimizer.momentum: optimizer adamw does not use this option; "
            "it takes: betas, decay_norm_and_bias, lr, weight_decay",
        ),
        edits=(("lr: 1.0e-2}", "lr: 1.0e-2, momentum: 0.5}"),),
    ),
    Case(
        "sgd_given_betas",
        "(betas with sgd was silently dropped too)",
        ("train.optimizer.betas: optimizer sgd does not use this option; it takes: decay_norm_and_bias, lr, momentum",),
        edits=(("{name: adamw, lr: 1.0e-2}", "{name: sgd, lr: 1.0e-2, betas: [0.9, 0.99]}"),),
    ),
    Case(
        "alias_bomb",
        "9 levels of 9 aliases took 5 GB and ended in a MemoryError traceback",
        ("recipe.yaml: the recipe expands to more than 100000 values once its YAML aliases",),
        text=BOMB,
    ),
    Case(
        "huge_recipe",
        "a 50 MB recipe ended in a MemoryError traceback",
        ("recipe.yaml: the recipe is 50.0 MB; a recipe may be at most 1 MB",),
        text=TOY + "# padding\n" * 5_000_000,
    ),
    Case(
        "nul_byte",
        "reported a character position, not a line",
        ("recipe.yaml:9:11: YAML error: character '\\x00' is not allowed in YAML",),
        edits=(("name: toy_mlp", "name: to\0y_mlp"),),
    ),
    Case(
        "encoder_null",
        "blamed on line 2",
        ("recipe.yaml:8: encoder: is null: give the encoder (name: ...) under encoder:",),
        edits=(("encoder:\n  name: toy_mlp", "encoder: null"),),
    ),
    Case(
        "encoder_and_encoders",
        "blamed on line 2",
        ("recipe.yaml:10: encoders: give either encoder (one) or encoders (one per modality part), not both",),
        edits=(("objectives:", "encoders:\n  a: {name: toy_mlp}\nobjectives:"),),
    ),
    Case(
        "set_misspelt_section",
        "--set trian.steps=5 was blamed on the file's line 1",
        ("recipe.yaml (--set trian.steps): trian: unknown field",),
        overrides=("trian.steps=5",),
    ),
    Case(
        "set_below_a_null_section",
        "--set export.onnx.opset=abc with export: null said 'is not a section'",
        (
            "recipe.yaml (--set export.onnx.opset): export.onnx.opset: Input should be a valid integer, "
            "unable to parse string as an integer",
        ),
        edits=(("export:\n  onnx: {opset: 18}", "export: null"),),
        overrides=("export.onnx.opset=abc",),
    ),
    Case(
        "set_below_a_value",
        "(said only 'parent is not a section')",
        ("--set: seed: is the value 0, not a section: no 'x' below it",),
        overrides=("seed.x=1",),
    ),
    Case(
        "opset_out_of_range",
        "export.onnx.opset: 99 printed the exporter's traceback, exited 0 and recorded 99",
        ("recipe.yaml:24: export.onnx.opset: Input should be less than or equal to 25",),
        edits=(("opset: 18", "opset: 99"),),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_recipe(case: Case, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(DATA))
    monkeypatch.setenv("SSLHUB_DISABLE_PLUGINS", "sslhub")
    monkeypatch.chdir(tmp_path)
    text = TOY if case.text is None else case.text
    for old, new in case.edits:
        assert old in text, old
        text = text.replace(old, new)
    Path("recipe.yaml").write_text(text)
    overrides = [part for item in case.overrides for part in ("--set", item)]
    assert main(["validate", "recipe.yaml", "-p", "toy_plugin", *overrides]) == case.exit_code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for line in case.expected:
        assert line in err, f"{line!r} not in:\n{err}"


def test_the_unedited_toy_recipe_is_valid(tmp_path, monkeypatch, capsys):
    """The corpus edits a valid recipe, so each case fails for its own reason only."""
    monkeypatch.syspath_prepend(str(DATA))
    monkeypatch.setenv("SSLHUB_DISABLE_PLUGINS", "sslhub")
    assert main(["validate", str(DATA / "toy_recipe.yaml"), "-p", "toy_plugin"]) == 0


def test_a_run_directory_recipe_with_every_optimizer_option_still_resolves(tmp_path, monkeypatch):
    """Run directories written before ignored options were refused hold momentum with adamw."""
    from sslhub.cli import load_and_resolve

    monkeypatch.syspath_prepend(str(DATA))
    monkeypatch.setenv("SSLHUB_DISABLE_PLUGINS", "sslhub")
    saved = tmp_path / "recipe.yaml"
    saved.write_text(TOY.replace("lr: 1.0e-2}", "lr: 1.0e-2, momentum: 0.9, trust_coefficient: 0.001}"))
    recipe = load_and_resolve(saved, [], ["toy_plugin"], saved=True)
    assert recipe.resolved_dict()["train"]["optimizer"] == {
        "name": "adamw",
        "lr": 0.01,
        "weight_decay": 0.0,
        "betas": [0.9, 0.999],
        "decay_norm_and_bias": False,
    }
