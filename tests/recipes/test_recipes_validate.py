"""Every shipped recipe validates against the installed built-in plugins."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslhub.catalog import Catalog
from sslhub.recipe import resolve_recipe
from sslhub.recipe_yaml import load_recipe_file

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(strict=True)


def test_recipes_exist():
    assert {"image_simclr.yaml", "image_inpainting.yaml", "text_mlm.yaml"} <= {p.name for p in RECIPES}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates(path: Path, catalog: Catalog):
    recipe = resolve_recipe(load_recipe_file(path), catalog)
    assert recipe.model.name
    assert recipe.model.evaluate.enabled, "shipped recipes end with an evaluation report"
