"""sslhub.testing: the kit plugin authors test with works as its documentation says."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import sslhub.testing
from sslhub.errors import RecipeError
from sslhub.testing import run_recipe_for_steps

DATA = Path(__file__).resolve().parents[1] / "data"


def toy_recipe() -> dict:
    return yaml.safe_load((DATA / "toy_recipe.yaml").read_text())


def test_overrides_reach_list_items_like_set(toy_catalog, tmp_path):
    run_recipe_for_steps(
        toy_recipe(), 2, catalog=toy_catalog, out=tmp_path / "run", overrides={"objectives.0.temperature": 0.7}
    )
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert saved["objectives"][0]["temperature"] == 0.7


def test_an_override_of_a_missing_list_item_is_a_recipe_error(toy_catalog):
    with pytest.raises(RecipeError, match="no such list item"):
        run_recipe_for_steps(toy_recipe(), 2, catalog=toy_catalog, overrides={"objectives.3.temperature": 0.7})


def test_the_module_example_calls_helpers_with_their_real_signatures():
    """The docstring example is code a reader copies: every helper it calls accepts its arguments."""
    import inspect

    example = sslhub.testing.__doc__
    for name in ("build_components", "check_objective_learns", "run_recipe_for_steps", "catalog_with"):
        assert f"{name}(" in example
    signature = inspect.signature(sslhub.testing.check_objective_learns)
    signature.bind("objective", "encoder", ["batch"], ["augmentation"], steps=20)
    inspect.signature(sslhub.testing.build_components).bind(
        "catalog", modality="image", encoder="small_cnn", objective="vicreg", augment=[], params={}
    )
