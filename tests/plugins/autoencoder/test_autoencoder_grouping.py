"""CSV tables grouped by a column, evaluate.data in a recipe, and ``sslhub evaluate RUN --data`` end to end
(and ``--set encoder.readout=...``: a trained encoder evaluated with another read-out)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sslhub.cli import main
from sslhub_autoencoder.modality import TabularModality, TabularParams

RECIPE = """\
name: grouped-table
data:
  modality: tabular
  source: {{type: csv, path: {path}, label_column: label, group_column: {group}}}
  eval_fraction: 0.3
encoder: {{name: mlp, hidden_sizes: [8], output_dim: 4}}
objectives: [{{name: autoencoder, bottleneck: 4, decoder_hidden: [8]}}]
train: {{steps: 2, batch_size: 8, device: cpu, checkpoint_every: 2}}
evaluate:
  linear_probe: {{epochs: 5}}
  few_shot: {{shots: [1, 5]}}
  data: {data}
export: null
"""


def write_csv(path: Path, sites: int = 5, seed: int = 0) -> Path:
    """Two classes (``x`` around +1, ``y`` around -1) measured at ``sites`` sites, 4 rows per class and site."""
    rng = np.random.default_rng(seed)
    rows = ["a,b,label,site"]
    for site in range(sites):
        for label, centre in (("x", 1.0), ("y", -1.0)):
            for _ in range(4):
                a, b = rng.normal(centre, 0.3, 2)
                rows.append(f"{a:.4f},{b:.4f},{label},s{site}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_the_labeled_split_keeps_sites_apart(tmp_path):
    path = write_csv(tmp_path / "t.csv")
    params = TabularParams.model_validate(
        {"source": {"type": "csv", "path": str(path), "label_column": "label", "group_column": "site"}}
    )
    model = TabularModality(params)
    split = model.eval_split()
    sites = model.table.groups
    train, test = model._splits
    assert not {sites[i] for i in train} & {sites[i] for i in test}
    assert split.groups == {"train": 4, "test": 1} and len(split.test) == 8
    assert model.dim == 2  # the group column is not a feature


def validate(tmp_path: Path, capsys, group: str = "site", data: str = "null") -> tuple[int, str]:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(path=write_csv(tmp_path / "t.csv"), group=group, data=data))
    code = main(["validate", str(recipe), "-p", "no:vision", "-p", "no:text", "-p", "no:audio"])
    return code, capsys.readouterr().err


def test_a_group_column_missing_from_the_file_is_a_recipe_error_at_its_line(tmp_path, capsys):
    code, err = validate(tmp_path, capsys, group="hospital")
    assert code == 2
    assert (
        f"recipe.yaml:4: data.source.group_column: group_column 'hospital' is not a column of {tmp_path / 't.csv'} "
        "(columns: a, b, label, site)"
    ) in err


def test_a_group_column_without_labels_is_a_recipe_error(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    text = RECIPE.format(path=write_csv(tmp_path / "t.csv"), group="site", data="null")
    recipe.write_text(text.replace("label_column: label, ", ""))
    assert main(["validate", str(recipe), "-p", "no:vision", "-p", "no:text", "-p", "no:audio"]) == 2
    assert "data.source: group_column groups the labeled split, so it needs label_column too" in capsys.readouterr().err


def test_evaluate_data_is_validated_like_the_rest_of_the_recipe(tmp_path, capsys):
    other = write_csv(tmp_path / "other.csv")
    data = f"{{source: {{type: csv, path: {other}, label_column: label, group_column: label, columns: [a, b]}}, test_fraction: 0.5}}"
    code, err = validate(tmp_path, capsys, data=data)
    assert code == 2
    assert (
        "recipe.yaml:12: evaluate.data.source.group_column: the grouped split leaves class 'x' with no probe-train "
        "samples"
    ) in err
    code, err = validate(tmp_path, capsys, data=f"{{source: {{type: csv, paht: {other}}}}}")
    assert code == 2
    assert "recipe.yaml:12: evaluate.data.source.path: required field is missing" in err
    assert "recipe.yaml:12: evaluate.data.source.paht: unknown field" in err


def sslhub(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    blocked = ["-p", "no:vision", "-p", "no:text", "-p", "no:audio"]
    command = [sys.executable, "-m", "sslhub", *args, *blocked]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=cwd)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A two-step tabular run whose own evaluation used evaluate.data (a separate CSV, grouped by site)."""
    root = tmp_path_factory.mktemp("run")
    other = write_csv(root / "other.csv", sites=4, seed=1)
    data = f"{{source: {{type: csv, path: {other}, label_column: label, group_column: site}}, test_fraction: 0.25}}"
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE.format(path=write_csv(root / "t.csv"), group="site", data=data))
    result = sslhub("run", str(recipe), "--out", str(root / "run"), cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


def test_a_recipe_evaluates_on_its_evaluate_data_source(finished_run):
    report = json.loads((finished_run / "evaluation.json").read_text())
    assert report["eval_split"] == {
        "train": 24,
        "test": 8,
        "groups": {"train": 3, "test": 1},
        "source": str(finished_run.parent / "other.csv"),
    }
    assert 0.0 <= report["trained"]["linear_probe_accuracy"] <= 1.0


def test_evaluate_run_on_another_labeled_csv_writes_its_own_json(finished_run, tmp_path):
    labeled = write_csv(tmp_path / "clinic b.csv", sites=6, seed=2)
    before = (finished_run / "evaluation.json").read_text()
    result = sslhub("evaluate", str(finished_run), "--data", str(labeled), "--group", "site", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    written = finished_run / "evaluation-clinic_b.json"
    assert f"wrote {written}" in result.stderr
    report = json.loads(written.read_text())
    assert json.loads(result.stdout) == report
    assert report["eval_split"]["groups"] == {"train": 4, "test": 2}
    assert report["eval_split"]["source"] == str(labeled)
    # Two well-separated classes: a probe on unseen sites still finds them.
    assert report["trained"]["knn_accuracy"] > 0.9
    assert (finished_run / "evaluation.json").read_text() == before  # the run's own evaluation is untouched


def test_evaluate_data_as_a_mapping_and_its_errors(finished_run, tmp_path):
    labeled = write_csv(tmp_path / "c.csv")
    mapping = f"{{type: csv, path: {labeled}, label_column: label, columns: [a, b]}}"
    result = sslhub("evaluate", str(finished_run), "--data", mapping, "--name", "plain", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "groups" not in json.loads((finished_run / "evaluation-plain.json").read_text())["eval_split"]
    result = sslhub("evaluate", str(finished_run), "--data", str(labeled), "--group", "clinic", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "error: --data: invalid labeled source (1 problem(s)):\n"
        f"  source.group_column: group_column 'clinic' is not a column of {labeled} (columns: a, b, label, site)"
    )
    result = sslhub("evaluate", str(finished_run), "--data", str(tmp_path / "missing.csv"), cwd=tmp_path)
    assert result.returncode == 1
    assert f"error: --data {tmp_path / 'missing.csv'}: no such file or folder, and not a mapping" in result.stderr


def test_evaluate_with_another_read_out_loads_the_encoder_weights_alone(finished_run, tmp_path):
    """The autoencoder's head reads the 4-d output; read out every layer (8 + 4 values) and the
    trained weights still load, the objective's held-out metrics are left out (its head no
    longer fits), and the random-init baseline reads out the same way."""
    result = sslhub("evaluate", str(finished_run), "--set", "encoder.readout=all_layers", "--name", "all", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((finished_run / "evaluation-all.json").read_text())
    assert "knn_accuracy" in report["trained"] and "objectives" not in report
    assert not any(key.startswith("autoencoder/") for key in report["trained"])
    sample = np.load(finished_run / "embeddings_sample-all.npz")
    assert sample["trained"].shape[1] == 12 and sample["random_init"].shape[1] == 12
    assert json.loads((finished_run / "evaluation.json").read_text())["trained"]["autoencoder/reconstruction_mse"] > 0


def test_evaluate_refuses_an_encoder_override_that_changes_its_layers(finished_run, tmp_path):
    result = sslhub("evaluate", str(finished_run), "--set", "encoder.output_dim=3", "--name", "x", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "the encoder weights in checkpoint" in result.stderr
    assert "do not fit the encoder as it is set now: size mismatch for encoder.default.layers." in result.stderr
    assert "(encoder settings can change how a trained encoder reads out its features, not its layers)" in result.stderr


def test_a_class_with_fewer_probe_train_rows_than_the_largest_k_is_a_validation_error(tmp_path, capsys):
    other = write_csv(tmp_path / "other.csv", sites=4, seed=1)
    data = f"{{source: {{type: csv, path: {other}, label_column: label, group_column: site}}, test_fraction: 0.25}}"
    recipe = tmp_path / "recipe.yaml"
    text = RECIPE.format(path=write_csv(tmp_path / "t.csv"), group="site", data=data)
    recipe.write_text(text.replace("few_shot: {shots: [1, 5]}", "few_shot: {shots: [1, 5, 20]}"))
    assert main(["validate", str(recipe)]) == 2
    assert (
        "recipe.yaml:12: evaluate.data.source.group_column: the split leaves class 'x', 'y' with 12 probe-train "
        "sample(s), fewer than the largest few-shot k (20); lower evaluate.few_shot.shots, add samples or groups of "
        "that class, or lower the test fraction"
    ) in capsys.readouterr().err
