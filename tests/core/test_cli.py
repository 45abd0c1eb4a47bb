"""The sslhub command: a few real subprocess calls, the rest through ``main()`` in process.

Each subprocess costs an interpreter start and a torch import (~3-4 s), so only what needs a
fresh process runs as one: ``python -m sslhub`` and the installed console script with its exit
code and stderr. Entry-point loading through the command is covered in test_catalog.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sslhub.cli import COMMANDS, main

pytestmark = pytest.mark.usefixtures("sslhub_env")

DATA = Path(__file__).resolve().parent.parent / "data"
RECIPES = DATA / "recipes"
TOY_RECIPE = DATA / "toy_recipe.yaml"
SEVERAL_PROBLEMS_STDERR = (
    "error: invalid recipe (4 problems):\n"
    "  recipes/bad/several_problems.yaml:5: data.samples: Input should be greater than 0\n"
    "  recipes/bad/several_problems.yaml:7: augment[0].name: unknown augmentation 'toy_nois'; "
    "did you mean 'toy_noise'?\n"
    "  recipes/bad/several_problems.yaml:10: encoder.hiden: unknown field for encoder 'toy_mlp'; did you mean 'hidden'?\n"
    "  recipes/bad/several_problems.yaml:13: objectives[0].temperature: Input should be greater than 0\n"
)
TOY_OBJECTIVES_LISTING = (
    "objectives:\n"
    "  toy_contrastive  [toy_plugin]\n"
    "      InfoNCE between two views.\n"
    "      temperature: float (default 0.2)\n"
    "      nan_at_step: int (default -1)  test hook: return NaN at this call\n"
)


# -- real subprocesses -------------------------------------------------------------------------


def test_python_m_sslhub_help_lists_the_commands(run_sslhub):
    result = run_sslhub("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: sslhub [-h] [--debug] COMMAND ...")
    for command in ("run", "validate", "plugins", "list", "evaluate", "export", "recipe"):
        assert f"\n    {command} " in result.stdout


def test_console_script_validate_of_a_bad_recipe_exits_2_listing_every_problem_without_traceback(run_sslhub):
    script = Path(sys.executable).with_name("sslhub")
    assert script.exists(), "the sslhub console script is not installed next to this Python"
    result = run_sslhub(
        "validate",
        "recipes/bad/several_problems.yaml",
        "-p",
        "toy_plugin",
        "-p",
        "sslhub_test_extras",
        command=[str(script)],
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == SEVERAL_PROBLEMS_STDERR
    assert "Traceback" not in result.stderr


def test_a_reader_that_stops_early_ends_the_command_quietly_with_sigpipes_status():
    """``sslhub plugins | head -1``: the reader is gone before the output is written."""
    child = subprocess.Popen(
        [sys.executable, "-m", "sslhub", "plugins"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    child.stdout.close()
    stderr = child.stderr.read().decode()
    assert child.wait(timeout=120) == 128 + signal.SIGPIPE, stderr
    assert stderr == ""


# -- main() in process ----------------------------------------------------------------------


def test_debug_shows_the_traceback_of_a_recipe_error(capsys, monkeypatch):
    monkeypatch.chdir(DATA)
    arguments = ["validate", "recipes/bad/several_problems.yaml", "-p", "toy_plugin", "-p", "sslhub_test_extras"]
    assert main(["--debug", *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):\n")
    assert "sslhub.errors.RecipeError: invalid recipe (4 problems):" in err
    assert err.endswith(SEVERAL_PROBLEMS_STDERR)
    # and without --debug, the message alone
    assert main(arguments) == 2
    assert capsys.readouterr().err == SEVERAL_PROBLEMS_STDERR


def test_a_broken_pipe_that_is_not_stdouts_is_reported_as_an_error(capsys, monkeypatch):
    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setitem(COMMANDS, "plugins", broken)
    assert main(["plugins"]) == 1
    assert capsys.readouterr().err.startswith("error: BrokenPipeError: [Errno 32] Broken pipe")


def test_list_objectives_matching_a_wildcard(capsys):
    assert main(["list", "objectives", "toy_*", "-p", "toy_plugin"]) == 0
    assert capsys.readouterr().out == TOY_OBJECTIVES_LISTING
    assert main(["list", "objectives", "*contrast*", "-p", "toy_plugin"]) == 0
    assert capsys.readouterr().out == TOY_OBJECTIVES_LISTING


def test_list_pattern_without_wildcard_matches_a_substring(capsys):
    assert main(["list", "objectives", "contrast", "-p", "toy_plugin"]) == 0
    assert capsys.readouterr().out == TOY_OBJECTIVES_LISTING
    assert main(["list", "objectives", "toy_contrastiv", "-p", "toy_plugin"]) == 0
    assert capsys.readouterr().out == TOY_OBJECTIVES_LISTING
    assert main(["list", "objectives", "toy_contrastiv?x", "-p", "toy_plugin"]) == 0  # a wildcard: matched whole
    assert capsys.readouterr().out == "objectives: (none)\n"


def test_validate_explain_shows_code_and_plugin_of_each_component(capsys):
    assert main(["validate", str(TOY_RECIPE), "--explain", "-p", "toy_plugin"]) == 0
    assert capsys.readouterr().out == (
        f"{TOY_RECIPE}: valid recipe 'toy'\n"
        "  data             modality 'toy_vectors' -> toy_plugin:ToyVectors [plugin 'toy_plugin']\n"
        "  augment[0]       augmentation 'toy_noise' -> toy_plugin:NoisyDimensions [plugin 'toy_plugin']\n"
        "  encoder          encoder 'toy_mlp' -> toy_plugin:ToyMlp [plugin 'toy_plugin']\n"
        "  objectives[0]    objective 'toy_contrastive' -> toy_plugin:ToyContrastive [plugin 'toy_plugin']\n"
    )


def test_validate_explain_names_the_distribution_of_entry_point_plugins(entry_point_plugins, capsys, caplog):
    recipe = RECIPES / "good_plugin.yaml"
    assert main(["validate", str(recipe), "--explain", "-p", "toy_plugin", "-p", "no:clashing"]) == 0
    out = capsys.readouterr().out
    assert (
        "  augment[0]       augmentation 'good_scale' -> sslhub_test_good.components:RandomScale "
        "[plugin 'good_plugin' (sslhub-test-good 1.2.3)]\n"
    ) in out
    assert (
        "  objectives[0]    objective 'good_objective' -> sslhub_test_good.components:CosineAgreement "
        "[plugin 'good_plugin' (sslhub-test-good 1.2.3)]\n"
    ) in out
    assert "  objectives[1]    objective 'toy_contrastive' -> toy_plugin:ToyContrastive" in out
    # the broken test plugins are warned about, and do not stop validation
    assert any("plugin 'misspelt_hook'" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_validate_set_overrides_and_a_bad_set_value_names_the_option(capsys):
    assert (
        main(
            [
                "validate",
                str(TOY_RECIPE),
                "-p",
                "toy_plugin",
                "--set",
                "train.steps=5",
                "--set",
                "objectives.0.temperature=0.1",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == f"{TOY_RECIPE}: valid recipe 'toy'\n"

    assert main(["validate", str(TOY_RECIPE), "-p", "toy_plugin", "--set", "train.steps=abc"]) == 2
    assert capsys.readouterr().err == (
        "error: invalid recipe (1 problem):\n"
        f"  {TOY_RECIPE} (--set train.steps): train.steps: Input should be a valid integer, unable to parse "
        "string as an integer\n"
    )
    assert main(["validate", str(TOY_RECIPE), "-p", "toy_plugin", "--set", "train.steps"]) == 2
    assert capsys.readouterr().err == (
        "error: invalid recipe (1 problem):\n  --set: train.steps: expected KEY=VALUE, for example train.steps=100\n"
    )


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ("nope.yaml", "nope.yaml: recipe file not found"),
        ("recipes/bad/empty.yaml", "recipes/bad/empty.yaml: the recipe is empty"),
        (
            "recipes/bad/requires_missing_plugin.yaml",
            "recipes/bad/requires_missing_plugin.yaml:5: requires[1]: plugin 'nonexistent-plugin' is not installed; "
            "pip install 'nonexistent-plugin>=1'",
        ),
    ],
)
def test_validate_failures_exit_2_with_one_message(recipe, message, capsys, monkeypatch):
    monkeypatch.chdir(DATA)
    assert main(["validate", recipe, "-p", "toy_plugin"]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", f"error: invalid recipe (1 problem):\n  {message}\n")


def test_recipe_schema_prints_json_with_the_loaded_components(capsys):
    assert main(["recipe", "schema", "-p", "toy_plugin"]) == 0
    schema = json.loads(capsys.readouterr().out)
    properties = schema["properties"]
    assert [v["properties"]["modality"]["const"] for v in properties["data"]["anyOf"]] == ["toy_vectors"]
    single, none = properties["encoder"]["anyOf"]
    assert [v["properties"]["name"]["const"] for v in single["anyOf"]] == ["toy_mlp"] and none == {"type": "null"}
    assert properties["encoders"]["anyOf"][0]["additionalProperties"] == single
    assert [v["properties"]["name"]["const"] for v in properties["augment"]["items"]["anyOf"]] == ["toy_noise"]
    [objective] = properties["objectives"]["items"]["anyOf"]
    assert objective["properties"]["name"] == {"const": "toy_contrastive"}
    assert objective["description"] == "InfoNCE between two views."


def test_list_every_kind_and_patterns(capsys):
    assert main(["list", "-p", "toy_plugin"]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if not line.startswith(" ")] == [
        "modalities:",
        "augmentations:",
        "encoders:",
        "objectives:",
    ]
    assert "  toy_mlp  [toy_plugin] modalities: toy_vectors provides: pooled\n      Two-layer MLP.\n" in out
    assert "      hidden: int (default 32)\n" in out
    assert out.endswith(TOY_OBJECTIVES_LISTING)

    assert main(["list", "augmentation", "toy_*", "-p", "toy_plugin"]) == 0  # singular kind works too
    assert capsys.readouterr().out.startswith("augmentations:\n  toy_noise  [toy_plugin] modalities: toy_vectors\n")
    assert main(["list", "encoders", "timm*", "-p", "toy_plugin"]) == 0
    assert capsys.readouterr().out == "encoders: (none)\n"


def test_list_unknown_kind_is_an_error(capsys):
    assert main(["list", "widgets"]) == 1
    captured = capsys.readouterr()
    assert (
        captured.err
        == "error: unknown kind 'widgets'; expected one of modalities, augmentations, encoders, objectives\n"
    )
    assert captured.out == ""


def test_plugins_text_and_json_for_p_modules(capsys):
    # a module named with -p that does not load is listed, and fails the command
    assert main(["plugins", "-p", "toy_plugin", "-p", "sslhub_no_such_module"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: plugin 'sslhub_no_such_module' (module sslhub_no_such_module): failed")
    lines = captured.out.splitlines()
    start = lines.index("toy_plugin [ok] (-p: toy_plugin)")
    assert lines[start + 1] == (
        "  hooks: sslhub_register_augmentations, sslhub_register_encoders, "
        "sslhub_register_modalities, sslhub_register_objectives"
    )
    assert lines[start + 2] == (
        "  components: modality:toy_vectors, augmentation:toy_noise, encoder:toy_mlp, objective:toy_contrastive"
    )
    assert "sslhub_no_such_module [ERROR] (-p: sslhub_no_such_module)" in lines

    assert main(["plugins", "--json", "-p", "toy_plugin"]) == 0
    records = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert records["toy_plugin"]["source"] == "-p" and records["toy_plugin"]["errors"] == []
    # the built-ins are blocked by distribution name (SSLHUB_DISABLE_PLUGINS=sslhub, from sslhub_env)
    builtins = [r for r in records.values() if r["distribution"] == "sslhub"]
    assert builtins and all(r["blocked"] for r in builtins)


def test_missing_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "the following arguments are required: COMMAND" in capsys.readouterr().err


def test_plugins_first_line_names_the_installed_library_versions(capsys):
    from importlib.metadata import version

    assert main(["plugins"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("versions: sslhub ")
    for name in ("torch", "torchvision", "torchaudio", "transformers", "timm", "onnxruntime"):
        assert f"{name} {version(name)}" in first


def test_plugins_lists_the_installed_file_decoders(capsys, monkeypatch):
    monkeypatch.delenv("SSLHUB_DISABLE_PLUGINS")  # blocked plugins' decoders are left out
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("file decoders (entry-point group sslhub.files):")
    decoders = {line.split(":")[0].strip(): line for line in lines[start + 1 :] if line.startswith("  ")}
    assert {"image", "text", "audio"} <= set(decoders), lines[start:]
    assert ".png" in decoders["image"] and "from sslhub" in decoders["image"]


def test_plugins_leaves_out_the_decoders_of_a_blocked_plugin(capsys, monkeypatch):
    monkeypatch.delenv("SSLHUB_DISABLE_PLUGINS")
    assert main(["plugins", "-p", "no:vision"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("file decoders (entry-point group sslhub.files):")
    decoders = {line.split(":")[0].strip() for line in lines[start + 1 :] if line.startswith("  ")}
    assert {"text", "audio"} <= decoders and "image" not in decoders
