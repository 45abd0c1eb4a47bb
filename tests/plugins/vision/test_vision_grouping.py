"""Image folders grouped by a path pattern: unseen test groups, validation errors at the recipe line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from sslhub.cli import main
from sslhub_vision.modality import ImageModality, ImageParams

RECIPE = """\
name: grouped
data:
  modality: image
  image_size: 8
  eval_fraction: {fraction}
  source:
    type: folder
    path: {path}
    group_pattern: '{pattern}'
encoder: {{name: small_cnn}}
objectives: [{{name: simclr}}]
"""


def make_folder(root: Path, flat: bool = False) -> Path:
    """``cat``/``dog`` images from four sources each (``src0_*`` .. ``src3_*``)."""
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        for source in range(4):
            for take in range(2):
                folder = root if flat else root / cls
                folder.mkdir(parents=True, exist_ok=True)
                pixels = rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{cls}_src{source}_{take}.png")
    return root


def validate(tmp_path: Path, capsys, pattern: str, fraction: float = 0.3, flat: bool = False) -> tuple[int, str]:
    folder = make_folder(tmp_path / "images", flat=flat)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(path=folder, pattern=pattern, fraction=fraction))
    code = main(["validate", str(recipe)])
    return code, capsys.readouterr().err


def test_the_labeled_split_keeps_sources_apart(tmp_path):
    folder = make_folder(tmp_path / "images")
    params = ImageParams.model_validate(
        {"source": {"type": "folder", "path": str(folder), "group_pattern": r"src(\d)"}, "image_size": 8}
    )
    split = ImageModality(params).eval_split()
    sources = {side: {Path(p).stem.split("_")[1] for p in getattr(split, side).paths} for side in ("train", "test")}
    assert sources["train"] and sources["test"] and not sources["train"] & sources["test"]
    assert split.groups == {"train": len(sources["train"]), "test": len(sources["test"])}
    assert sorted(int(split.test[i]["label"]) for i in range(len(split.test))) == [0, 0, 1, 1]


def test_a_pattern_that_matches_nothing_is_a_recipe_error_at_its_line(tmp_path, capsys):
    code, err = validate(tmp_path, capsys, r"speaker(\d)")
    assert code == 2
    assert (
        f"recipe.yaml:9: data.source.group_pattern: pattern 'speaker(\\d)' matches none of the 16 files under "
        f"{tmp_path / 'images'} (e.g. 'cat/cat_src0_0.png')"
    ) in err


def test_a_split_leaving_a_class_without_train_samples_is_a_recipe_error(tmp_path, capsys):
    code, err = validate(tmp_path, capsys, r"^(cat|dog)/", fraction=0.5)
    assert code == 2
    assert "recipe.yaml:9: data.source.group_pattern: the grouped split leaves class 'cat' with no probe-train" in err


def test_a_group_pattern_on_a_folder_without_labels_is_a_recipe_error(tmp_path, capsys):
    code, err = validate(tmp_path, capsys, r"src(\d)", flat=True)
    assert code == 2
    assert (
        f"recipe.yaml:9: data.source.group_pattern: grouping splits the labeled samples, but {tmp_path / 'images'} "
        "has no labels (some files lie outside class subfolders)"
    ) in err


def test_labeled_split_of_another_folder_is_grouped_and_names_its_source(tmp_path):
    model = ImageModality(ImageParams(image_size=8))
    folder = make_folder(tmp_path / "other")
    source = ImageParams.model_validate(
        {"source": {"type": "folder", "path": str(folder), "group_pattern": r"src(?P<group>\d)"}}
    ).source
    split = model.labeled_split(source, 0.5, seed=1)
    assert split.source == str(folder) and split.groups == {"train": 2, "test": 2}
    assert split.train[0]["image"].shape == (3, 8, 8)
