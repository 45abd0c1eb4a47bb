"""Catalog: loading plugins from real entry points, -p modules and the Python decorator API.

The entry-point tests use tiny distributions in tests/data/plugins/, installed with pip into a
temporary directory (see ``installed_plugins`` in conftest.py): a good one, one that fails to
import, one with a misspelt hook, one with a hook argument the spec lacks, and one whose
objective name clashes with the good one's.
"""

from __future__ import annotations

import json
import re
import sys
import types

import pytest

import sslhub
from sslhub import Catalog, Params, PluginError, hookimpl
from sslhub.cli import main

pytestmark = pytest.mark.usefixtures("sslhub_env")

GOOD = "plugin 'good_plugin' (sslhub-test-good 1.2.3)"
CLASH_ERROR = (
    "objective 'good_objective' is registered twice: by plugin 'good_plugin' (sslhub-test-good 1.2.3) and by "
    "plugin 'clashing' (sslhub-test-clashing 0.4.0); block one with -p no:PLUGIN or SSLHUB_DISABLE_PLUGINS"
)
MISSPELT_ERROR = (
    "unknown hook sslhub_register_objectivs; known hooks: sslhub_export_encoder, sslhub_register_augmentations, "
    "sslhub_register_callbacks, sslhub_register_encoders, sslhub_register_modalities, sslhub_register_objectives"
)
BAD_SIGNATURE_ERROR = (
    "invalid hook implementation: Plugin 'bad_signature' for hook 'sslhub_register_objectives'\n"
    "hookimpl definition: sslhub_register_objectives(registry, extra)\n"
    "Argument(s) {'extra'} are declared in the hookimpl but can not be found in the hookspec"
)
BROKEN_IMPORT_ERROR = re.compile(
    r"failed to import sslhub_test_broken_import\.plugin: ModuleNotFoundError: No module named "
    r"'sslhub_test_missing_dependency' \(at .*sslhub_test_broken_import[/\\]plugin\.py:3\)"
)
TEST_DISTRIBUTIONS = {
    "bad_signature": ("sslhub-test-bad-signature", "0.3.0"),
    "broken_import": ("sslhub-test-broken-import", "0.1.0"),
    "clashing": ("sslhub-test-clashing", "0.4.0"),
    "good_plugin": ("sslhub-test-good", "1.2.3"),
    "misspelt_hook": ("sslhub-test-misspelt-hook", "0.2.0"),
}


def never_built(params, context):
    raise AssertionError("test component: never built")


# -- plugins given as modules and objects (no entry points) ----------------------------


def test_toy_plugin_loaded_with_p_registers_everything_attributed_to_it():
    catalog = Catalog.load(["toy_plugin"], entry_points=False)
    assert catalog.modalities.names() == ["toy_vectors"]
    assert catalog.augmentations.names() == ["toy_noise"]
    assert catalog.encoders.names() == ["toy_mlp"]
    assert catalog.objectives.names() == ["toy_contrastive"]
    record = catalog.plugin_for("toy_plugin")
    assert (record.source, record.module, record.errors, record.blocked) == ("-p", "toy_plugin", [], False)
    assert record.hooks == [
        "sslhub_register_augmentations",
        "sslhub_register_encoders",
        "sslhub_register_modalities",
        "sslhub_register_objectives",
    ]
    assert sorted(f"{c.kind}:{c.name}" for c in record.components) == [
        "augmentation:toy_noise",
        "encoder:toy_mlp",
        "modality:toy_vectors",
        "objective:toy_contrastive",
    ]
    assert record.label() == "plugin 'toy_plugin' (module toy_plugin)"
    assert catalog.objectives.get("toy_contrastive").qualname == "toy_plugin:ToyContrastive"
    assert catalog.problems() == []


def test_catalogs_are_independent():
    first = Catalog.load(["toy_plugin"], entry_points=False)
    second = Catalog.load([], entry_points=False)
    first.objectives.register("only_in_first", never_built)
    assert "only_in_first" not in second.objectives
    assert "toy_contrastive" not in second.objectives
    assert Catalog.load(["toy_plugin"], entry_points=False).objectives.names() == ["toy_contrastive"]


def test_plugin_module_that_does_not_exist_raises_and_strict_false_reports_it():
    message = (
        "plugin 'sslhub_no_such_module' (module sslhub_no_such_module): failed to import module "
        "'sslhub_no_such_module' given with -p: ModuleNotFoundError: No module named 'sslhub_no_such_module'"
    )
    # a plugin named explicitly must load, even without strict mode
    with pytest.raises(PluginError) as info:
        Catalog.load(["sslhub_no_such_module", "toy_plugin"], entry_points=False)
    assert str(info.value).startswith(f"a -p argument failed:\n  {message}")
    # strict=False (what `sslhub plugins` uses) reports instead
    catalog = Catalog.load(["sslhub_no_such_module", "toy_plugin"], entry_points=False, strict=False)
    [problem] = catalog.problems()
    assert problem.startswith(message) and catalog.explicit_problems() == [problem]
    assert "toy_contrastive" in catalog.objectives  # the rest still loads


def test_p_path_to_a_py_file_imports_it_under_its_stem(tmp_path, monkeypatch):
    (tmp_path / "sslhub_test_file_plugin.py").write_text(
        "from sslhub import hookimpl\n\n\n@hookimpl\ndef sslhub_register_objectives(registry):\n"
        "    registry.register('file_objective', lambda params, context: None)\n"
    )
    monkeypatch.delitem(sys.modules, "sslhub_test_file_plugin", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    catalog = Catalog.load([str(tmp_path / "sslhub_test_file_plugin.py")], entry_points=False)
    record = catalog.plugin_for("sslhub_test_file_plugin")
    assert (record.source, record.module, record.errors) == ("-p", str(tmp_path / "sslhub_test_file_plugin.py"), [])
    assert catalog.objectives.get("file_objective").provider.plugin == "sslhub_test_file_plugin"
    assert sys.path[0] == str(tmp_path)  # its folder, for imports of its own modules
    # the same stem from another folder is refused rather than silently shadowed
    other = tmp_path / "other"
    other.mkdir()
    (other / "sslhub_test_file_plugin.py").write_text("")
    catalog = Catalog.load([str(other / "sslhub_test_file_plugin.py")], entry_points=False, strict=False)
    [problem] = catalog.explicit_problems()
    assert "another module named 'sslhub_test_file_plugin' is already imported" in problem


def test_p_no_with_an_unknown_name_is_an_error_with_close_matches(entry_point_plugins):
    with pytest.raises(PluginError) as info:
        Catalog.load(["no:good_plugn"])
    assert str(info.value) == (
        "a -p argument failed:\n  -p no:good_plugn: no installed plugin is named 'good_plugn'; "
        "did you mean 'good_plugin'?"
    )
    # distribution names are known names too
    assert Catalog.load(["no:sslhub-test-good"]).plugin_for("good_plugin").blocked


class MisspeltPlugin:
    @hookimpl
    def sslhub_register_encoder(self, registry):  # singular: not a hook
        registry.register("never", never_built)


class ExtraArgumentPlugin:
    @hookimpl
    def sslhub_register_encoders(self, registry, device):
        registry.register("never", never_built)


class RaisingPlugin:
    @hookimpl
    def sslhub_register_objectives(self, registry):
        registry.register("fine_before_failure", never_built)
        raise ValueError("boom")


class SelfClashingPlugin:
    @hookimpl
    def sslhub_register_objectives(self, registry):
        registry.register("toy_contrastive", never_built)


class BadNamePlugin:
    @hookimpl
    def sslhub_register_augmentations(self, registry):
        registry.register("Bad-Name", never_built)


def test_plugin_problems_are_recorded_per_plugin_and_the_others_keep_working():
    toy = sys.modules.get("toy_plugin") or __import__("toy_plugin")
    # Register hooks run in pluggy's order, the last registered plugin first: toy_plugin comes
    # last so it owns its names and SelfClashingPlugin is the one refused.
    catalog = Catalog.from_modules(
        MisspeltPlugin(), ExtraArgumentPlugin(), RaisingPlugin(), SelfClashingPlugin(), BadNamePlugin(), toy
    )
    errors = {record.name: record.errors for record in catalog.plugins}
    assert errors["toy_plugin"] == []
    assert errors["MisspeltPlugin"] == [
        "unknown hook sslhub_register_encoder; known hooks: sslhub_export_encoder, sslhub_register_augmentations, "
        "sslhub_register_callbacks, sslhub_register_encoders, sslhub_register_modalities, sslhub_register_objectives"
    ]
    assert errors["ExtraArgumentPlugin"] == [
        "invalid hook implementation: Plugin 'ExtraArgumentPlugin' for hook 'sslhub_register_encoders'\n"
        "hookimpl definition: sslhub_register_encoders(registry, device)\n"
        "Argument(s) {'device'} are declared in the hookimpl but can not be found in the hookspec"
    ]
    [raised] = errors["RaisingPlugin"]
    assert re.fullmatch(r"sslhub_register_objectives raised ValueError: boom \(at .*test_catalog\.py:\d+\)", raised)
    assert errors["SelfClashingPlugin"] == [
        "objective 'toy_contrastive' is registered twice: by plugin 'toy_plugin' and by plugin "
        "'SelfClashingPlugin'; block one with -p no:PLUGIN or SSLHUB_DISABLE_PLUGINS"
    ]
    assert errors["BadNamePlugin"] == [
        "plugin 'BadNamePlugin' tried to register augmentation 'Bad-Name': names must be snake_case identifiers"
    ]
    assert catalog.objectives.get("toy_contrastive").provider.plugin == "toy_plugin"
    assert "never" not in catalog.encoders
    # what a plugin registered before it failed stays, attributed to it
    assert catalog.objectives.get("fine_before_failure").provider.plugin == "RaisingPlugin"
    assert catalog.encoders.names() == ["toy_mlp"]


def test_strict_mode_turns_plugin_problems_into_an_error(monkeypatch):
    with pytest.raises(PluginError) as info:
        Catalog.load(["toy_plugin", "sslhub_no_such_module"], entry_points=False, strict=True)
    message = str(info.value)
    assert message.startswith(
        "plugin problems (SSLHUB_STRICT_PLUGINS is on):\n  plugin 'sslhub_no_such_module' (module "
        "sslhub_no_such_module): failed to import module 'sslhub_no_such_module' given with -p"
    )
    monkeypatch.setenv("SSLHUB_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError):
        Catalog.load(["sslhub_no_such_module"], entry_points=False)
    # a clean plugin set passes in strict mode, and strict=False overrides the environment
    assert "toy_mlp" in Catalog.load(["toy_plugin"], entry_points=False).encoders
    Catalog.load(["sslhub_no_such_module"], entry_points=False, strict=False)


# -- the Python decorator API ------------------------------------------------------------


class DecoratedParams(Params):
    scale: float = 1.0


def test_decorator_api_registration_reaches_every_new_catalog_attributed_to_its_module():
    @sslhub.objectives.register("decorated_objective", params=DecoratedParams, requires=["tokens"])
    def decorated_objective(params, context):
        """An objective registered from plain Python."""
        return params

    try:
        catalog = Catalog.load(["toy_plugin"], entry_points=False)
        component = catalog.objectives.get("decorated_objective")
        assert component.factory is decorated_objective
        assert component.params is DecoratedParams
        assert component.requires == frozenset({"tokens"})
        assert component.description == "An objective registered from plain Python."
        assert component.provider.plugin == __name__
        record = catalog.plugin_for(__name__)
        assert (record.source, [c.name for c in record.components]) == ("python", ["decorated_objective"])
        assert "decorated_objective" not in Catalog.load([], entry_points=False, python_registrations=False).objectives
    finally:
        sslhub.objectives.unregister("decorated_objective")
    assert "decorated_objective" not in Catalog.load([], entry_points=False).objectives


def test_decorator_api_clash_with_a_plugin_is_reported_on_the_python_side():
    sslhub.encoders.register("toy_mlp")(never_built)
    try:
        catalog = Catalog.load(["toy_plugin"], entry_points=False)
    finally:
        sslhub.encoders.unregister("toy_mlp")
    assert catalog.encoders.get("toy_mlp").provider.plugin == "toy_plugin"
    assert catalog.problems() == [
        f"plugin '{__name__}' (module {__name__}): encoder 'toy_mlp' is registered twice: by plugin 'toy_plugin' "
        f"and by plugin '{__name__}'; block one with -p no:PLUGIN or SSLHUB_DISABLE_PLUGINS"
    ]


def test_decorator_api_in_a_p_module_is_attributed_to_that_plugin(monkeypatch):
    module = types.ModuleType("sslhub_test_decorated_module")
    exec(  # a module that registers through sslhub.augmentations.register at import time
        "import sslhub\n"
        "@sslhub.augmentations.register('decorated_noise', modalities=['toy_vectors'])\n"
        "def decorated_noise(params, context):\n"
        "    return None\n",
        module.__dict__,
    )
    monkeypatch.setitem(sys.modules, module.__name__, module)
    try:
        catalog = Catalog.load(["toy_plugin", module.__name__], entry_points=False)
    finally:
        sslhub.augmentations.unregister("decorated_noise")
    record = catalog.plugin_for(module.__name__)
    assert record.source == "-p"
    assert [c.name for c in record.components] == ["decorated_noise"]
    assert catalog.augmentations.get("decorated_noise").modalities == frozenset({"toy_vectors"})


# -- real entry points, in process ---------------------------------------------------------


def test_entry_points_load_each_plugin_with_its_distribution_and_report_broken_ones(entry_point_plugins):
    catalog = Catalog.load(["toy_plugin"])
    records = {r.name: r for r in catalog.plugins if r.name in TEST_DISTRIBUTIONS}
    assert {name: (r.distribution, r.version) for name, r in records.items()} == TEST_DISTRIBUTIONS
    assert all(r.source == "entry point" for r in records.values())

    assert records["good_plugin"].errors == []
    assert [f"{c.kind}:{c.name}" for c in records["good_plugin"].components] == [
        "augmentation:good_scale",
        "objective:good_objective",
    ]
    good_objective = catalog.objectives.get("good_objective")
    assert str(good_objective.provider) == GOOD
    assert good_objective.qualname == "sslhub_test_good.components:CosineAgreement"
    assert "toy_contrastive" in catalog.objectives  # -p plugins load beside entry points

    assert records["clashing"].errors == [CLASH_ERROR]
    assert records["misspelt_hook"].errors == [MISSPELT_ERROR]
    assert records["bad_signature"].errors == [BAD_SIGNATURE_ERROR]
    [import_error] = records["broken_import"].errors
    assert BROKEN_IMPORT_ERROR.fullmatch(import_error)
    # a plugin that fails validation contributes nothing, not even its valid hooks
    assert "bad_signature_augmentation" not in catalog.augmentations
    assert "misspelt_objective" not in catalog.objectives
    # the built-ins are blocked by the sslhub_env fixture, and shown as such
    builtins = [r for r in catalog.plugins if r.distribution == "sslhub"]
    assert builtins and all(r.blocked and not r.components for r in builtins)
    assert sorted(p.split(":")[0] for p in catalog.problems()) == [
        "plugin 'bad_signature' (sslhub-test-bad-signature 0.3.0)",
        "plugin 'broken_import' (sslhub-test-broken-import 0.1.0)",
        "plugin 'clashing' (sslhub-test-clashing 0.4.0)",
        "plugin 'misspelt_hook' (sslhub-test-misspelt-hook 0.2.0)",
    ]


def test_blocking_by_p_no_and_by_environment(entry_point_plugins, monkeypatch):
    catalog = Catalog.load(["no:good_plugin"])
    assert catalog.plugin_for("good_plugin").blocked
    assert catalog.plugin_for("good_plugin").components == []
    assert "good_scale" not in catalog.augmentations
    # with the owner blocked, the rival's registration no longer clashes
    assert catalog.objectives.get("good_objective").provider.plugin == "clashing"
    assert catalog.plugin_for("clashing").errors == []

    # SSLHUB_DISABLE_PLUGINS takes entry-point names and distribution names
    monkeypatch.setenv("SSLHUB_DISABLE_PLUGINS", "sslhub,good_plugin,sslhub-test-clashing")
    catalog = Catalog.load()
    assert catalog.plugin_for("good_plugin").blocked and catalog.plugin_for("clashing").blocked
    assert "good_objective" not in catalog.objectives and "good_scale" not in catalog.augmentations


def test_strict_mode_with_entry_points_names_every_broken_plugin(entry_point_plugins):
    with pytest.raises(PluginError) as info:
        Catalog.load(strict=True)
    lines = str(info.value).splitlines()
    assert lines[0] == "plugin problems (SSLHUB_STRICT_PLUGINS is on):"
    assert f"  plugin 'clashing' (sslhub-test-clashing 0.4.0): {CLASH_ERROR}" in lines
    assert f"  plugin 'misspelt_hook' (sslhub-test-misspelt-hook 0.2.0): {MISSPELT_ERROR}" in lines
    # blocking the broken ones makes strict mode pass
    catalog = Catalog.load(["no:clashing", "no:misspelt_hook", "no:bad_signature", "no:broken_import"], strict=True)
    assert "good_objective" in catalog.objectives


# -- real entry points, through the sslhub command ------------------------------------------


def test_sslhub_plugins_json_reports_each_plugin_with_distribution_and_version(installed_plugins, run_sslhub):
    result = run_sslhub("plugins", "--json", pythonpath=[installed_plugins])
    assert result.returncode == 0, result.stderr
    records = {r["name"]: r for r in json.loads(result.stdout)}
    assert {name: (records[name]["distribution"], records[name]["version"]) for name in TEST_DISTRIBUTIONS} == (
        TEST_DISTRIBUTIONS
    )
    good = records["good_plugin"]
    assert (good["errors"], good["blocked"], good["source"], good["module"]) == (
        [],
        False,
        "entry point",
        "sslhub_test_good.plugin",
    )
    assert good["hooks"] == ["sslhub_register_augmentations", "sslhub_register_objectives"]
    assert good["components"] == ["augmentation:good_scale", "objective:good_objective"]
    assert records["clashing"]["errors"] == [CLASH_ERROR]
    assert records["clashing"]["hooks"] == ["sslhub_register_objectives"]
    assert records["misspelt_hook"]["errors"] == [MISSPELT_ERROR]
    assert records["bad_signature"]["errors"] == [BAD_SIGNATURE_ERROR]
    assert BROKEN_IMPORT_ERROR.fullmatch(records["broken_import"]["errors"][0])
    assert all(r["blocked"] for r in records.values() if r["distribution"] == "sslhub")


def test_sslhub_list_warns_about_broken_plugins_and_lists_the_good_ones(entry_point_plugins, capsys, caplog):
    # in process (same code as the command, without another ~4 s torch import)
    assert main(["list"]) == 0
    stdout = capsys.readouterr().out
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert f"plugin 'clashing' (sslhub-test-clashing 0.4.0): {CLASH_ERROR}" in warnings
    assert f"plugin 'misspelt_hook' (sslhub-test-misspelt-hook 0.2.0): {MISSPELT_ERROR}" in warnings
    assert f"plugin 'bad_signature' (sslhub-test-bad-signature 0.3.0): {BAD_SIGNATURE_ERROR}" in warnings
    assert any(
        w.startswith("plugin 'broken_import' (sslhub-test-broken-import 0.1.0): failed to import") for w in warnings
    )
    assert "  good_objective  [good_plugin]\n" in stdout
    assert "      predictor_dim: int (default 16)  hidden width of the predictor head\n" in stdout
    assert "  good_scale  [good_plugin]\n" in stdout
    assert "misspelt_objective" not in stdout and "bad_signature" not in stdout


def test_strict_plugins_makes_sslhub_list_fail_naming_the_problems(installed_plugins, run_sslhub):
    result = run_sslhub("list", pythonpath=[installed_plugins], env={"SSLHUB_STRICT_PLUGINS": "1"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert "error: plugin problems (SSLHUB_STRICT_PLUGINS is on):\n" in result.stderr
    for name, (distribution, version) in TEST_DISTRIBUTIONS.items():
        if name != "good_plugin":
            assert f"  plugin '{name}' ({distribution} {version}): " in result.stderr
    assert "plugin 'good_plugin'" not in result.stderr.replace(CLASH_ERROR, "")


def test_sslhub_plugins_shows_blocked_plugins_and_works_when_every_active_plugin_is_broken(
    entry_point_plugins, monkeypatch, capsys
):
    # good_plugin blocked with -p no:, clashing by distribution name: only broken plugins remain;
    # strict mode still lists everything (that is how one finds out what is broken), then fails
    # the command, since strict mode exists for CI
    monkeypatch.setenv("SSLHUB_DISABLE_PLUGINS", "sslhub,sslhub-test-clashing")
    monkeypatch.setenv("SSLHUB_STRICT_PLUGINS", "1")
    assert main(["plugins", "-p", "no:good_plugin"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "error: a plugin failed to load and SSLHUB_STRICT_PLUGINS is on\n"
    lines = captured.out.splitlines()
    assert "good_plugin [blocked] sslhub-test-good 1.2.3 (entry point: sslhub_test_good.plugin)" in lines
    assert "clashing [blocked] sslhub-test-clashing 0.4.0 (entry point: sslhub_test_clashing.plugin)" in lines
    assert "misspelt_hook [ERROR] sslhub-test-misspelt-hook 0.2.0 (entry point: sslhub_test_misspelt_hook.plugin)" in (
        lines
    )
    assert f"  error: {MISSPELT_ERROR}" in lines
    assert (
        "broken_import [ERROR] sslhub-test-broken-import 0.1.0 (entry point: sslhub_test_broken_import.plugin)" in lines
    )
    assert "bad_signature [ERROR] sslhub-test-bad-signature 0.3.0 (entry point: sslhub_test_bad_signature.plugin)" in (
        lines
    )
    assert not any(line.startswith("  components:") for line in lines)


class _FakeDistribution:
    def __init__(self, requires):
        self.requires = requires
        self.metadata = {"Name": "sslhub-old"}


def test_plugin_declaring_an_incompatible_sslhub_range_is_reported():
    from sslhub import __version__
    from sslhub.catalog import _incompatible_sslhub

    assert _incompatible_sslhub(_FakeDistribution(["sslhub>=0.1", "torch"])) == ""
    assert _incompatible_sslhub(_FakeDistribution(["sslhub<0.1"])) == (
        f"needs sslhub<0.1, but sslhub {__version__} is installed; "
        f"install a sslhub-old release made for sslhub {__version__}"
    )
    assert _incompatible_sslhub(None) == ""


def test_unknown_names_point_at_plugins_that_did_not_load(entry_point_plugins):
    catalog = Catalog.load(["toy_plugin"])
    message = catalog.encoders.unknown_message("resnet_from_a_missing_plugin")
    assert message.startswith("unknown encoder 'resnet_from_a_missing_plugin'; known: ")
    assert "these may provide it: " in message and message.endswith("(see `sslhub plugins`)")
    assert "plugin 'broken_import' (sslhub-test-broken-import 0.1.0) failed to load" in message
    assert "plugin 'bad_signature' (sslhub-test-bad-signature 0.3.0) failed to load" in message
    assert "of sslhub are blocked" in message  # the built-ins, blocked by the sslhub_env fixture
    # a near miss is a typo, not a missing plugin
    assert catalog.objectives.unknown_message("good_objectiv") == (
        "unknown objective 'good_objectiv'; did you mean 'good_objective'?"
    )


def test_sslhub_plugins_exits_zero_in_strict_mode_when_every_plugin_loads(entry_point_plugins, monkeypatch, capsys):
    monkeypatch.setenv("SSLHUB_DISABLE_PLUGINS", "sslhub")
    monkeypatch.setenv("SSLHUB_STRICT_PLUGINS", "1")
    blocked = ["no:clashing", "no:misspelt_hook", "no:bad_signature", "no:broken_import"]
    assert main(["plugins", *[a for b in blocked for a in ("-p", b)]]) == 0
    assert capsys.readouterr().err == ""


def test_a_hook_named_function_without_the_marker_is_a_warning_not_silence(tmp_path, monkeypatch, capsys):
    plugin = tmp_path / "sslhub_test_unmarked_plugin.py"
    plugin.write_text("def sslhub_register_objectives(registry):\n    registry.register('never', None)\n")
    monkeypatch.delitem(sys.modules, "sslhub_test_unmarked_plugin", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert main(["plugins", "-p", str(plugin)]) == 0
    out = capsys.readouterr().out
    assert "sslhub_test_unmarked_plugin [ok]" in out
    assert "warning: function sslhub_register_objectives() is named like a hook but is not marked" in out


def test_debug_shows_the_traceback_of_a_plugin_that_failed_to_import(tmp_path, monkeypatch, capsys, caplog):
    plugin = tmp_path / "sslhub_test_broken_import.py"
    plugin.write_text("def helper():\n    raise RuntimeError('boom inside helper')\n\n\nhelper()\n")
    monkeypatch.delitem(sys.modules, "sslhub_test_broken_import", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert main(["plugins", "-p", str(plugin)]) == 1
    assert "Traceback" not in capsys.readouterr().err + caplog.text
    assert main(["--debug", "plugins", "-p", str(plugin)]) == 1
    err = caplog.text  # the sslhub logger's output (stderr outside pytest)
    assert "Traceback (most recent call last)" in err
    assert "in helper" in err and "RuntimeError: boom inside helper" in err
