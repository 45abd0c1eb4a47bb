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


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_validate_explain_names_every_component(path: Path, catalog: Catalog, capsys):
    from sslhub.cli import main

    assert main(["validate", str(path), "--explain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    recipe = resolve_recipe(load_recipe_file(path), catalog)
    explained = {line.split()[0] for line in lines[1:]}
    expected = {"data", *(a.path for a in recipe.augmentations), *(o.path for o in recipe.objectives)}
    expected |= {e.path for e in recipe.encoders.values()}
    assert explained == expected
    assert any(line.split()[0].startswith("encoder") and " encoder '" in line for line in lines[1:])


def test_validate_explain_on_a_recipe_with_several_encoders_in_the_real_command():
    import subprocess
    import sys

    path = next(p for p in RECIPES if p.name == "image_text_clip.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "sslhub", "validate", str(path), "--explain"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert "encoders.image" in done.stdout and "encoders.text" in done.stdout
