"""The report's fine-tuning section (sslhub/report/finetune_section.py), from a run directory's files."""

from __future__ import annotations

import json
from pathlib import Path

from sslhub.report import write_report

RESULTS = {
    "run_dir": "../..",
    "encoder_key": "default",
    "class_names": ["a", "b"],
    "steps": 70,
    "test_accuracy": 0.75,
    "early_stopping": {
        "monitor": "val_loss",
        "stopped": {"step": 70, "best_step": 50, "best_value": 0.4, "monitor": "val_loss", "reason": "no gain"},
        "best_step": 50,
        "best_value": 0.4,
        "restored_best": True,
    },
    "comparison": {
        "test_samples": 40,
        "draws": 1,
        "rows": [
            {"shots": 5, "pretrained": 0.7, "random_init": 0.5, "linear_probe": 0.65},
            {"shots": None, "pretrained": 0.9, "random_init": 0.8, "linear_probe": "broken"},
        ],
    },
}


def test_the_report_shows_each_fine_tunes_comparison_table(tmp_path: Path):
    run = tmp_path / "run"
    (run / "finetune" / "few").mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: toy\n")
    (run / "finetune" / "few" / "finetune.json").write_text(json.dumps(RESULTS))
    page = write_report([run], tmp_path / "report.html").read_text()
    section = page.split("<h2>Fine-tuning</h2>", 1)[1]
    assert "<h3>few</h3><p>70 steps, test accuracy 0.7500; stopped early at step 70: no gain; best val_loss " in section
    assert (
        "<th>fine-tuned from pretrained</th><th>fine-tuned from random init</th><th>linear probe (frozen)</th>"
        in section
    )
    assert (
        "<td class='num'>5</td><td class='num'>0.7000</td><td class='num'>0.5000</td><td class='num'>0.6500</td>"
        in section
    )
    assert "<td>all</td><td class='num'>0.9000</td><td class='num'>0.8000</td><td>-</td>" in section  # bad cell: "-"


def test_no_fine_tune_no_section(tmp_path: Path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "recipe.yaml").write_text("name: toy\n")
    assert "Fine-tuning" not in write_report([tmp_path / "run"], tmp_path / "report.html").read_text()
