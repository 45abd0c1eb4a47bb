"""``sslhub validate`` on image_text folder sources: a bad group pattern is reported at its recipe line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslhub.cli import main
from sslhub_multimodal.modality import FolderPairSource, ImageTextParams

RECIPE = """\
name: grouped-pairs
data:
  modality: image_text
  image_size: 8
  eval_fraction: 0.3
  source: {{type: folder, path: {pretrain}}}
encoders:
  image: {{name: small_cnn, width: 8, stages: 2}}
  text: {{name: hf, architecture: bert, hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64}}
objectives: [{{name: clip}}]
evaluate:
  few_shot: {{shots: [1, 2]}}
  data:
    source:
      type: folder
      path: {labeled}
      group_pattern: '{pattern}'
    test_fraction: {fraction}
"""


def write_pairs(root: Path, flat: bool = False) -> Path:
    """``dark``/``bright`` pairs of four icon names each, two sizes per name (``<name>__<size>.png`` + caption)."""
    for cls, shade in (("dark", 30), ("bright", 220)):
        folder = root if flat else root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for name in range(4):
            for size in range(2):
                stem = folder / f"{cls}{name}__{size}"
                Image.fromarray(np.full((10, 10, 3), shade, dtype=np.uint8)).save(stem.with_suffix(".png"))
                stem.with_suffix(".txt").write_text(f"a {cls} icon number {name}\n")
    return root


def validate(tmp_path: Path, capsys, pattern: str, fraction: float = 0.3, flat: bool = False) -> tuple[int, str]:
    pretrain = write_pairs(tmp_path / "pretrain")
    labeled = write_pairs(tmp_path / "labeled", flat=flat)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(pretrain=pretrain, labeled=labeled, pattern=pattern, fraction=fraction))
    code = main(["validate", str(recipe)])
    return code, capsys.readouterr().err


def test_a_pattern_that_groups_every_pair_validates(tmp_path, capsys):
    code, err = validate(tmp_path, capsys, r"/(?P<group>\w+)__\d+\.png$")
    assert code == 0, err


def test_a_pattern_that_matches_nothing_is_a_recipe_error_at_its_line(tmp_path, capsys):
    code, err = validate(tmp_path, capsys, r"speaker(\d)")
    assert code == 2
    assert (
        f"recipe.yaml:17: evaluate.data.source.group_pattern: pattern 'speaker(\\d)' matches none of the 16 files "
        f"under {tmp_path / 'labeled'} (e.g. 'bright/bright0__0.png')"
    ) in err


def test_a_split_leaving_a_class_without_train_pairs_is_a_recipe_error(tmp_path, capsys):
    code, err = validate(tmp_path, capsys, r"^(dark|bright)/", fraction=0.5)
    assert code == 2
    assert "recipe.yaml:17: evaluate.data.source.group_pattern: the grouped split leaves class" in err


def test_a_group_pattern_on_pairs_without_labels_is_a_recipe_error(tmp_path, capsys):
    code, err = validate(tmp_path, capsys, r"(?P<group>\w+)__\d+\.png$", flat=True)
    assert code == 2
    assert "recipe.yaml:17: evaluate.data.source.group_pattern: grouping splits the labeled samples" in err


def test_the_training_source_pattern_and_path_are_checked_too(tmp_path):
    write_pairs(tmp_path / "pairs")
    params = ImageTextParams(source=FolderPairSource(path=tmp_path / "pairs", group_pattern=r"nowhere(\d)"))
    problems = params.file_problems()
    assert [path for path, _ in problems] == [("source", "group_pattern")]
    assert "matches none of the 16 files" in problems[0][1]
    missing = ImageTextParams(source=FolderPairSource(path=tmp_path / "absent")).file_problems()
    assert missing == [
        (
            ("source", "path"),
            f"{tmp_path / 'absent'} does not exist (a relative path starts from the folder the command runs in)",
        )
    ]
    with pytest.raises(ValueError, match="eval_fraction must be above 0"):
        ImageTextParams(source=FolderPairSource(path=tmp_path / "pairs", group_pattern=r"(\w+)"), eval_fraction=0)
