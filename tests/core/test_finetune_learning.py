"""Fine-tuning pays off: from the pretrained encoder it beats the same architecture from random init.

A real learning test on the embedded digits (image_simclr, a short pretraining run): 5 labeled
images per class, the same seeded draw, steps and options for both, scored on the test side.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from toy_runs import sslhub

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "image_simclr.yaml"


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """SimCLR on the embedded digits, 60 steps (about 30 s on two cores)."""
    run = tmp_path_factory.mktemp("digits") / "run"
    pretraining = ["train.steps=60", "train.checkpoint_every=60", "evaluate.enabled=false"]
    pretraining += ["export=null", "report.enabled=false"]
    result = sslhub("run", str(RECIPE), "--out", str(run), *[a for s in pretraining for a in ("--set", s)])
    assert result.returncode == 0, result.stderr
    return run


@pytest.mark.slow
def test_pretrained_encoder_fine_tunes_better_than_random_init_at_5_labels_per_class(digits_run: Path):
    run = digits_run
    fine_tuning = ["finetune.shots=5", "finetune.steps=150", "finetune.compare.shots=[5]"]
    fine_tuning += ["finetune.compare.linear_probe=false"]
    result = sslhub("finetune", str(run), *[a for s in fine_tuning for a in ("--set", s)])
    assert result.returncode == 0, result.stderr
    found = json.loads((run / "finetune" / "default" / "finetune.json").read_text())
    (row,) = found["comparison"]["rows"]
    assert (row["shots"], row["train"], row["validation"]) == (5, 40, 10)
    assert row["pretrained"] == found["test_accuracy"]  # the main fine-tune is the table's pretrained cell
    assert row["pretrained"] > row["random_init"] + 0.03, row
    assert row["pretrained"] > 0.5  # ten classes: chance is 0.1
    assert "pretraining helps at 5 labels per class" in result.stdout


def test_another_labeled_set_is_given_as_for_evaluate(digits_run: Path, tmp_path: Path):
    """``--data``: a folder of class folders; the fine-tune is named after it."""
    run = digits_run
    folder = tmp_path / "shades"
    for name, level in (("dark", 40), ("bright", 210)):
        (folder / name).mkdir(parents=True)
        for index in range(10):
            Image.fromarray(np.full((20, 20, 3), level + 3 * index, dtype=np.uint8)).save(
                folder / name / f"{index}.png"
            )
    options = ["finetune.steps=10", "finetune.compare=null", "finetune.validate_every=5"]
    result = sslhub("finetune", str(run), "--data", str(folder), *[a for s in options for a in ("--set", s)])
    assert result.returncode == 0, result.stderr
    found = json.loads((run / "finetune" / "shades" / "finetune.json").read_text())
    assert found["class_names"] == ["bright", "dark"] and found["data"]["source"] == str(folder)
    assert found["data"]["train"] + found["data"]["validation"] + found["data"]["test"] == 20
