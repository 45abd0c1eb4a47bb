"""Fine-tuning pays off: from the pretrained encoder it beats the same architecture from random init.

A real learning test on the embedded digits (image_simclr, a short pretraining run): 5 labeled
images per class, the same seeded draw, steps and options for both, scored on the test side.
"""

from __future__ import annotations

import json
from pathlib import Path

from toy_runs import sslhub

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "image_simclr.yaml"


def test_pretrained_encoder_fine_tunes_better_than_random_init_at_5_labels_per_class(tmp_path: Path):
    run = tmp_path / "run"
    pretraining = ["train.steps=60", "train.checkpoint_every=60", "evaluate.enabled=false"]
    pretraining += ["export=null", "report.enabled=false"]
    result = sslhub("run", str(RECIPE), "--out", str(run), *[a for s in pretraining for a in ("--set", s)])
    assert result.returncode == 0, result.stderr
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
