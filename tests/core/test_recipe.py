"""Recipes: YAML loading, the three validation passes, overrides and the JSON schema.

The bad-recipe corpus lives in tests/data/recipes/bad/; every file there has its exact
expected problems (``FILE:LINE[:COL]: field.path: message``) in ``BAD_RECIPES`` below.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sslhub import Catalog
from sslhub.errors import RecipeError
from sslhub.recipe import ResolvedRecipe, resolve_recipe
from sslhub.recipe_yaml import apply_override, load_recipe_file, load_recipe_text
from sslhub.schema import recipe_json_schema

pytestmark = pytest.mark.usefixtures("sslhub_env")

DATA = Path(__file__).resolve().parent.parent / "data"
RECIPES = DATA / "recipes"
BAD_RECIPES = RECIPES / "bad"
TOY_RECIPE = DATA / "toy_recipe.yaml"

#: file name -> every problem ``sslhub validate`` must report, in order (FILE is the file's path)
BAD_RECIPES_EXPECTED: dict[str, list[str]] = {
    "yaml_syntax.yaml": ["FILE:6:16: YAML error: mapping values are not allowed here"],
    "duplicate_key.yaml": ["FILE:6:1: YAML error: duplicate key 'seed' (first defined on line 3)"],
    "python_tag.yaml": [
        "FILE:5:12: YAML error: tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed: "
        "recipes hold data only, never code"
    ],
    "unknown_section.yaml": ["FILE:9: trainer: unknown field; did you mean 'train'?"],
    "unknown_component.yaml": [
        "FILE:6: encoder.name: unknown encoder 'toy_mpl'; did you mean 'toy_mlp' or 'toy_token_mlp'?"
    ],
    "unknown_param.yaml": ["FILE:7: encoder.hiden: unknown field for encoder 'toy_mlp'; did you mean 'hidden'?"],
    "negative_lr.yaml": ["FILE:13: train.optimizer.lr: Input should be greater than 0"],
    "several_problems.yaml": [
        "FILE:5: data.samples: Input should be greater than 0",
        "FILE:7: augment[0].name: unknown augmentation 'toy_nois'; did you mean 'toy_noise'?",
        "FILE:10: encoder.hiden: unknown field for encoder 'toy_mlp'; did you mean 'hidden'?",
        "FILE:13: objectives[0].temperature: Input should be greater than 0",
    ],
    "several_section_problems.yaml": [
        "FILE:2: name: String should match pattern '^[A-Za-z0-9_.-]+$'",
        "FILE:9: objectives[0].weight: Input should be greater than or equal to 0",
        "FILE:12: train.batch_size: Input should be greater than 0",
        "FILE:13: train.precision: Input should be 'fp32', 'bf16' or 'fp16'",
    ],
    "augmentation_wrong_modality.yaml": [
        "FILE:7: augment[1]: augmentation 'fake_image_flip' does not accept modality 'toy_vectors' "
        "(it accepts: fake_image)"
    ],
    "objective_needs_tokens.yaml": [
        "FILE:9: objectives[1]: objective 'token_predictor' needs tokens features, but encoder 'toy_mlp' "
        "provides only pooled"
    ],
    "missing_required.yaml": [
        "FILE:3: data.modality: required field is missing",
        "FILE:2: encoder: required field is missing (or give encoders:, one per modality part)",
    ],
    "steps_and_epochs.yaml": ["FILE:9: train: give either steps or epochs, not both"],
    "requires_missing_plugin.yaml": [
        "FILE:5: requires[1]: plugin 'nonexistent-plugin' is not installed; pip install 'nonexistent-plugin>=1'"
    ],
    "no_objectives.yaml": ["FILE:7: objectives: List should have at least 1 item after validation, not 0"],
    "empty.yaml": ["FILE: the recipe is empty"],
    "not_a_mapping.yaml": ["FILE:1: a recipe must be a mapping of sections (name, data, ...)"],
    "unhashable_key.yaml": ["FILE:5:5: YAML error: found unhashable key"],
}
KNOWN_BUGS: dict[str, str] = {}


@pytest.fixture
def catalog() -> Catalog:
    """The toy plugin plus sslhub_test_extras (token objective, fake_image augmentation)."""
    return Catalog.load(["toy_plugin", "sslhub_test_extras"], entry_points=False, python_registrations=False)


def problems(path: Path, catalog: Catalog, overrides: tuple[str, ...] = ()) -> list[str]:
    """The problems reported for a recipe file, with its path written as FILE."""
    with pytest.raises(RecipeError) as info:
        source = load_recipe_file(path)
        for assignment in overrides:
            apply_override(source, assignment)
        resolve_recipe(source, catalog)
    assert str(info.value).startswith(f"invalid recipe ({len(info.value.issues)} problem")
    return [str(issue).replace(str(path), "FILE") for issue in info.value.issues]


def test_every_bad_recipe_file_has_expectations():
    assert sorted(p.name for p in BAD_RECIPES.glob("*.yaml")) == sorted(BAD_RECIPES_EXPECTED)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[name]))
        if name in KNOWN_BUGS
        else name
        for name in sorted(BAD_RECIPES_EXPECTED)
    ],
)
def test_bad_recipe_reports_exact_problems_with_lines(name, catalog):
    assert problems(BAD_RECIPES / name, catalog) == BAD_RECIPES_EXPECTED[name]


def test_recipe_error_message_lists_every_problem(catalog):
    path = BAD_RECIPES / "several_problems.yaml"
    with pytest.raises(RecipeError) as info:
        resolve_recipe(load_recipe_file(path), catalog)
    assert info.value.exit_code == 2
    assert str(info.value) == "invalid recipe (4 problems):\n" + "\n".join(
        "  " + line.replace("FILE", str(path)) for line in BAD_RECIPES_EXPECTED["several_problems.yaml"]
    )


def test_python_tag_is_never_executed(tmp_path, catalog):
    marker = tmp_path / "pwned"
    text = f"name: x\ndata:\n  modality: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(RecipeError):
        load_recipe_text(text, "inline.yaml")
    assert not marker.exists()


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(RecipeError) as info:
        load_recipe_file(tmp_path / "nope.yaml")
    assert [str(i) for i in info.value.issues] == [f"{tmp_path / 'nope.yaml'}: recipe file not found"]
    with pytest.raises(RecipeError) as info:
        load_recipe_file(tmp_path)
    assert [str(i) for i in info.value.issues] == [f"{tmp_path}: is a directory, expected a recipe .yaml file"]


def test_toy_recipe_resolves_with_validated_params_and_defaults(catalog):
    recipe = resolve_recipe(load_recipe_file(TOY_RECIPE), catalog)
    assert isinstance(recipe, ResolvedRecipe)
    assert recipe.modality.component.name == "toy_vectors"
    assert recipe.modality.params.samples == 512 and recipe.modality.params.dim == 16  # default filled in
    assert [a.component.name for a in recipe.augmentations] == ["toy_noise"]
    assert recipe.augmentations[0].path == "augment[0]"
    assert recipe.encoders["default"].params.hidden == 32
    [objective] = recipe.objectives
    assert (objective.component.name, objective.params.temperature, objective.weight, objective.start_step) == (
        "toy_contrastive",
        0.2,
        1.0,
        0,
    )
    assert objective.path == "objectives[0]"
    assert recipe.train.steps == 60 and recipe.train.optimizer.lr == 1e-2
    resolved = recipe.resolved_dict()
    assert resolved["encoder"] == {"name": "toy_mlp", "hidden": 32, "out": 16}
    assert resolved["objectives"] == [
        {"name": "toy_contrastive", "weight": 1.0, "start_step": 0, "temperature": 0.2, "nan_at_step": -1}
    ]
    # the resolved YAML is itself a valid recipe that resolves to the same thing
    again = resolve_recipe(load_recipe_text(recipe.resolved_yaml(), "resolved.yaml"), catalog)
    assert again.fingerprint() == recipe.fingerprint()


def test_objective_weight_and_start_step_belong_to_the_engine(catalog):
    source = load_recipe_file(TOY_RECIPE)
    apply_override(source, "objectives.0.weight=0.25")
    apply_override(source, "objectives.0.start_step=7")
    [objective] = resolve_recipe(source, catalog).objectives
    assert (objective.weight, objective.start_step) == (0.25, 7)
    assert "weight" not in type(objective.params).model_fields  # not passed to the objective's params


def test_set_overrides_fields_and_changes_the_fingerprint(catalog):
    baseline = resolve_recipe(load_recipe_file(TOY_RECIPE), catalog)
    source = load_recipe_file(TOY_RECIPE)
    for assignment in (
        "train.steps=5",
        "objectives.0.temperature=0.5",
        "evaluate.knn.k=3",
        "data.dim=8",
        "train.optimizer.name=sgd",
    ):
        apply_override(source, assignment)
    recipe = resolve_recipe(source, catalog)
    assert recipe.train.steps == 5
    assert recipe.objectives[0].params.temperature == 0.5
    assert recipe.model.evaluate.knn.k == 3
    assert recipe.modality.params.dim == 8
    assert recipe.train.optimizer.name == "sgd"
    assert recipe.fingerprint() != baseline.fingerprint()


def test_set_with_a_bad_value_names_the_override_not_a_line(catalog):
    assert problems(TOY_RECIPE, catalog, ("train.steps=abc",)) == [
        "FILE (--set train.steps): train.steps: Input should be a valid integer, unable to parse string as an integer"
    ]
    assert problems(TOY_RECIPE, catalog, ("objectives.0.temperatur=1",)) == [
        "FILE (--set objectives[0].temperatur): objectives[0].temperatur: unknown field for objective 'toy_contrastive'; did you mean 'temperature'?"
    ]
    # two overrides giving both budgets -> both given
    assert problems(TOY_RECIPE, catalog, ("train.epochs=2", "train.steps=3")) == [
        "FILE:13: train: give either steps or epochs, not both"
    ]


def test_a_set_budget_replaces_the_recipes_other_budget(catalog):
    source = load_recipe_file(TOY_RECIPE)  # the file gives train.steps
    apply_override(source, "train.epochs=2")
    recipe = resolve_recipe(source, catalog)
    assert (recipe.train.steps, recipe.train.epochs) == (None, 2)
    source = load_recipe_file(TOY_RECIPE)
    source.data["train"] = {**source.data["train"], "steps": None, "epochs": 3}  # a recipe giving epochs
    apply_override(source, "train.steps=7")
    recipe = resolve_recipe(source, catalog)
    assert (recipe.train.steps, recipe.train.epochs) == (7, None)


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("train.steps", "--set: train.steps: expected KEY=VALUE, for example train.steps=100"),
        ("objectives.3.temperature=1", "--set: objectives[3]: no such list item"),
        ("name.first=1", "--set: name: is the value 'toy', not a section: no 'first' below it"),
        ("train.steps=[1", "--set: train.steps: cannot parse value '[1': "),
    ],
)
def test_malformed_set_is_a_recipe_error(assignment, expected):
    source = load_recipe_file(TOY_RECIPE)
    with pytest.raises(RecipeError) as info:
        apply_override(source, assignment)
    [issue] = info.value.issues
    assert str(issue).startswith(expected)


def test_requires_satisfied_and_version_checked_against_installed_distributions(entry_point_plugins, catalog):
    catalog = Catalog.load(["toy_plugin"], python_registrations=False)
    recipe = resolve_recipe(load_recipe_file(RECIPES / "good_plugin.yaml"), catalog)
    assert [o.component.provider.distribution for o in recipe.objectives] == ["sslhub-test-good", ""]

    source = load_recipe_file(RECIPES / "good_plugin.yaml")
    apply_override(source, "requires=['sslhub_test_good>=2', 'toy_plugin', 'not a requirement!']")
    with pytest.raises(RecipeError) as info:
        resolve_recipe(source, catalog)
    where = f"{RECIPES / 'good_plugin.yaml'} (--set requires)"
    assert [str(i) for i in info.value.issues][0] == (
        f"{where}: requires[0]: plugin 'sslhub_test_good' 1.2.3 is installed, but the recipe needs >=2; "
        "pip install 'sslhub_test_good>=2'"
    )
    assert str(info.value.issues[1]).startswith(f"{where}: requires[2]: invalid requirement: ")
    assert len(info.value.issues) == 2  # 'toy_plugin' (a -p module) is present


def test_requires_a_blocked_or_broken_plugin_is_a_problem(entry_point_plugins):
    catalog = Catalog.load(["toy_plugin", "no:good_plugin"], python_registrations=False)
    source = load_recipe_file(TOY_RECIPE)
    apply_override(source, "requires=[good_plugin, broken_import]")
    with pytest.raises(RecipeError) as info:
        resolve_recipe(source, catalog)
    assert [i.path for i in info.value.issues] == ["requires[0]", "requires[1]"]


def test_objective_needing_tokens_accepts_an_encoder_that_provides_them(catalog):
    source = load_recipe_file(BAD_RECIPES / "objective_needs_tokens.yaml")
    apply_override(source, "encoder.name=toy_token_mlp")
    recipe = resolve_recipe(source, catalog)
    assert recipe.objectives[1].component.requires <= recipe.encoders["default"].component.provides
    assert recipe.objectives[1].weight == 0.5


def test_json_schema_describes_the_installed_components(catalog):
    schema = json.loads(json.dumps(recipe_json_schema(catalog)))  # JSON-serialisable
    properties = schema["properties"]
    modality_names = [v["properties"]["modality"]["const"] for v in properties["data"]["anyOf"]]
    assert modality_names == ["toy_vectors"]
    objectives = {v["properties"]["name"]["const"]: v for v in properties["objectives"]["items"]["anyOf"]}
    assert sorted(objectives) == ["nested_head", "token_predictor", "toy_contrastive"]
    toy = objectives["toy_contrastive"]
    assert toy["properties"]["temperature"]["exclusiveMinimum"] == 0
    assert set(toy["properties"]) >= {"name", "weight", "start_step", "temperature"}
    assert toy["additionalProperties"] is False
    augment_names = [v["properties"]["name"]["const"] for v in properties["augment"]["items"]["anyOf"]]
    assert augment_names == ["fake_image_flip", "toy_noise"]
    assert "train" in properties and schema["title"] == "sslhub recipe"


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_json_schema_refs_all_resolve_from_the_root(catalog):
    schema = recipe_json_schema(catalog)
    for ref in _refs(schema):
        node = schema
        for part in ref.removeprefix("#/").split("/"):
            assert part in node, f"{ref} does not resolve"
            node = node[part]


def test_zero_steps_is_a_random_init_baseline_but_negative_steps_are_refused(catalog):
    source = load_recipe_file(TOY_RECIPE)
    apply_override(source, "train.steps=0")
    assert resolve_recipe(source, catalog).train.steps == 0
    assert problems(TOY_RECIPE, catalog, ("train.steps=-1",)) == [
        "FILE (--set train.steps): train.steps: Input should be greater than or equal to 0"
    ]


@pytest.mark.parametrize(
    ("opset", "expected"),
    [
        (99, "FILE (--set export.onnx.opset): export.onnx.opset: Input should be less than or equal to 25"),
        (17, "FILE (--set export.onnx.opset): export.onnx.opset: Input should be greater than or equal to 18"),
    ],
)
def test_onnx_opset_outside_what_the_exporter_writes_is_refused(opset, expected, catalog):
    assert problems(TOY_RECIPE, catalog, (f"export.onnx.opset={opset}",)) == [expected]


def test_onnx_opset_range_is_what_the_installed_exporter_converts_to(catalog):
    from onnxscript.version_converter import _version_converter

    from sslhub.export import MAX_ONNX_OPSET, MIN_ONNX_OPSET

    # torch.onnx's operator library is written at opset 18; onnxscript converts it up to its maximum
    assert (MIN_ONNX_OPSET, MAX_ONNX_OPSET) == (18, _version_converter.SUPPORTED_MAX_ONNX_OPSET)
    source = load_recipe_file(TOY_RECIPE)
    apply_override(source, f"export.onnx.opset={MAX_ONNX_OPSET}")
    apply_override(source, "export.onnx.rtol=0")
    onnx_spec = resolve_recipe(source, catalog).model.export.onnx
    assert (onnx_spec.opset, onnx_spec.atol, onnx_spec.rtol) == (MAX_ONNX_OPSET, 1e-4, 0)
    assert problems(TOY_RECIPE, catalog, ("export.onnx.rtol=-1e-3",)) == [
        "FILE (--set export.onnx.rtol): export.onnx.rtol: Input should be greater than or equal to 0"
    ]


def _requiring(name: str) -> str:
    return (
        f"name: toy\nrequires: [{name}]\ndata: {{modality: toy_vectors}}\nencoder: {{name: toy_mlp}}\n"
        "objectives: [{name: toy_contrastive}]\n"
    )


def test_required_plugin_that_failed_to_load_is_not_called_missing(catalog):
    from sslhub.catalog import PluginRecord

    broken = PluginRecord(name="vicreg", module="sslhub_vicreg.plugin", distribution="sslhub-vicreg", version="0.2")
    broken.errors.append("failed to import sslhub_vicreg.plugin: ImportError: no module named 'scipy' (at x.py:3)")
    catalog.plugins.append(broken)
    try:
        with pytest.raises(RecipeError) as info:
            resolve_recipe(load_recipe_text(_requiring("sslhub-vicreg>=0.2"), "r.yaml"), catalog)
    finally:
        catalog.plugins.remove(broken)
    assert [str(issue) for issue in info.value.issues] == [
        "r.yaml:2: requires[0]: plugin 'vicreg' (sslhub-vicreg 0.2) is installed but failed to load: failed to import "
        "sslhub_vicreg.plugin: ImportError: no module named 'scipy' (at x.py:3) (see `sslhub plugins`)"
    ]


def test_required_plugin_that_is_blocked_says_so(catalog):
    from sslhub.catalog import PluginRecord

    blocked = PluginRecord(name="vicreg", module="sslhub_vicreg.plugin", distribution="sslhub-vicreg", version="0.2")
    blocked.blocked = True
    catalog.plugins.append(blocked)
    try:
        with pytest.raises(RecipeError) as info:
            resolve_recipe(load_recipe_text(_requiring("vicreg"), "r.yaml"), catalog)
    finally:
        catalog.plugins.remove(blocked)
    assert [str(issue) for issue in info.value.issues] == [
        "r.yaml:2: requires[0]: plugin 'vicreg' (sslhub-vicreg 0.2) is blocked (-p no:vicreg)"
    ]


def test_unknown_fields_get_close_matches(catalog):
    text = (
        "name: toy\ndata: {modality: toy_vectors}\nencoder: {name: toy_mlp, hiden: 16}\n"
        "objectives: [{name: toy_contrastive}]\ntrain: {stesp: 5}\n"
    )
    with pytest.raises(RecipeError) as info:
        resolve_recipe(load_recipe_text(text, "r.yaml"), catalog)
    assert [str(issue) for issue in info.value.issues] == [
        "r.yaml:5: train.stesp: unknown field; did you mean 'steps'?"
    ]
    with pytest.raises(RecipeError) as info:
        resolve_recipe(load_recipe_text(text.replace("stesp", "steps"), "r.yaml"), catalog)
    assert [str(issue) for issue in info.value.issues] == [
        "r.yaml:3: encoder.hiden: unknown field for encoder 'toy_mlp'; did you mean 'hidden'?"
    ]
