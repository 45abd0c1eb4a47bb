"""``sslhub finetune`` end to end through the real command, on a toy run (tests/data/toy_plugin.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from toy_runs import BLOCK_BUILTINS, RECIPE, final_weights, sslhub, sslhub_env, torchrun_command

from sslhub.errors import SSLHubError
from sslhub.finetune_command import labeled_split

PLUGINS = ["-p", "toy_plugin", *BLOCK_BUILTINS]
#: one thread in every process: the same float reductions, so weights can be compared bitwise.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
#: a fine-tune that stops early well before its 600 steps (constant lr: see the replay test).
EARLY = [
    *("--set", "finetune.schedule=constant"),
    *("--set", "finetune.steps=600"),
    *("--set", "finetune.validate_every=5"),
    *("--set", "finetune.early_stopping.patience=4"),
    *("--set", "finetune.compare=null"),
]


def finetune(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return sslhub("finetune", str(run_dir), *PLUGINS, *args, env=ONE_THREAD)


def results(folder: Path) -> dict:
    return json.loads((folder / "finetune.json").read_text())


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finetune") / "run"
    off = ["export=null", "report.enabled=false", "evaluate.enabled=false"]
    result = sslhub("run", str(RECIPE), *PLUGINS, "--out", str(out), *[a for s in off for a in ("--set", s)])
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def early_stopped(pretrained_run: Path) -> Path:
    result = finetune(pretrained_run, "--name", "early", *EARLY)
    assert result.returncode == 0, result.stderr
    assert "stopped early at step" in result.stdout
    return pretrained_run / "finetune" / "early"


def test_the_fine_tune_directory_holds_what_predict_and_load_read(early_stopped: Path, pretrained_run: Path):
    found = results(early_stopped)
    assert found["run_dir"] == "../.." and found["encoder_key"] == "default"
    assert found["class_names"] == ["0", "1", "2", "3"]
    assert found["options"]["optimizer"] == {
        "name": "adamw",
        "lr": 0.01,
        "weight_decay": 0.0,
        "betas": [0.9, 0.999],
        "decay_norm_and_bias": False,
    }
    data = found["data"]
    assert (data["source"], data["shots"], data["train"] + data["validation"], data["test"]) == (
        "the run's labeled split", None, 256, 256
    )  # fmt: skip
    assert abs(data["validation"] - 0.2 * 256) <= 2  # 20% of each of the four classes, rounded
    head = load_file(early_stopped / "head.safetensors")
    assert set(head) == {"weight", "bias"} and head["weight"].shape == (4, 16) and head["bias"].shape == (4,)
    pretrained = {k.removeprefix("encoder.default."): v for k, v in final_weights(pretrained_run).items()}
    assert set(load_file(early_stopped / "encoder.safetensors")) == {k for k in pretrained if k.startswith("net.")}
    logged = [json.loads(line) for line in (early_stopped / "metrics.jsonl").read_text().splitlines()]
    validations = [row for row in logged if "val_loss" in row]
    assert validations == found["validation_history"] and len(validations) == found["steps"] // 5


def test_early_stopping_stops_and_returns_the_best_validations_weights(early_stopped: Path, pretrained_run: Path):
    found = results(early_stopped)
    stop = found["early_stopping"]
    assert stop["stopped"]["step"] == found["steps"] < 600
    assert stop["stopped"]["reason"] == "val_loss did not improve by more than 0 in 4 validation(s)"
    history = found["validation_history"]
    best = min(history, key=lambda row: row["val_loss"])
    assert (stop["best_step"], stop["best_value"], stop["restored_best"]) == (best["step"], best["val_loss"], True)
    assert stop["best_step"] == found["steps"] - 4 * 5
    # The last step's weights (the newest checkpoint) are not what came back ...
    newest = sorted((early_stopped / "checkpoints").glob("step_*.pt"))[-1]
    last_head = torch.load(newest, weights_only=True)["model"]["head.weight"]
    assert not torch.equal(last_head, load_file(early_stopped / "head.safetensors")["weight"])
    # ... the best step's are: a fine-tune of exactly best_step steps ends with them (constant lr,
    # and validation draws no random numbers).
    replay = finetune(
        pretrained_run, "--name", "replay", *EARLY, "--set", f"finetune.steps={stop['best_step']}",
        "--set", "finetune.early_stopping=null",
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    for name in ("encoder.safetensors", "head.safetensors"):
        assert (pretrained_run / "finetune" / "replay" / name).read_bytes() == (early_stopped / name).read_bytes()


@pytest.mark.slow
def test_sigkill_then_resume_ends_identical_to_an_uninterrupted_fine_tune(early_stopped: Path, pretrained_run: Path):
    folder = pretrained_run / "finetune" / "killed"
    command = [sys.executable, "-m", "sslhub", "finetune", str(pretrained_run), *PLUGINS, "--name", "killed", *EARLY]
    command += ["--set", "finetune.checkpoint_every=5"]
    process = subprocess.Popen(
        command, env={**sslhub_env(), **ONE_THREAD}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    manifest = folder / "checkpoints" / "manifest.json"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if manifest.exists() and json.loads(manifest.read_text() or '{"checkpoints": []}')["checkpoints"]:
            break
        time.sleep(0.01)
    process.kill()
    process.wait()
    steps = [entry["step"] for entry in json.loads(manifest.read_text())["checkpoints"]]
    assert steps and steps[-1] < results(early_stopped)["steps"], "the fine-tune should have been killed mid-way"
    assert not (folder / "finetune.json").exists()

    resumed = finetune(pretrained_run, "--name", "killed", "--resume")  # the request is read from the folder
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed the fine-tune from" in resumed.stderr
    for name in ("encoder.safetensors", "head.safetensors"):
        assert (folder / name).read_bytes() == (early_stopped / name).read_bytes()
    again, reference = results(folder), results(early_stopped)
    for key in ("steps", "early_stopping", "validation_history", "test_accuracy", "test_loss"):
        assert again[key] == reference[key], key
    # The log lines after the checkpoint were dropped and written again, the same.
    assert (folder / "metrics.jsonl").read_text() == (early_stopped / "metrics.jsonl").read_text()


def test_frozen_mode_leaves_the_encoder_unchanged_and_trains_the_head(pretrained_run: Path):
    result = finetune(
        pretrained_run, "--name", "frozen", "--set", "finetune.mode=frozen", "--set", "finetune.steps=100",
        "--set", "finetune.compare=null",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    folder = pretrained_run / "finetune" / "frozen"
    pretrained = final_weights(pretrained_run)
    encoder = load_file(folder / "encoder.safetensors")
    assert encoder and all(torch.equal(value, pretrained[f"encoder.default.{key}"]) for key, value in encoder.items())
    assert results(folder)["test_accuracy"] > 0.6  # four classes: chance is 0.25


@pytest.mark.slow
def test_the_comparison_table_has_a_row_per_label_count(pretrained_run: Path):
    result = finetune(
        pretrained_run, "--name", "table", "--set", "finetune.steps=40", "--set", "finetune.compare.shots=[5, null]",
        "--set", "finetune.compare.draws=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = results(pretrained_run / "finetune" / "table")["comparison"]
    assert [row["shots"] for row in table["rows"]] == [5, None] and table["draws"] == 2
    assert (table["rows"][0]["train"], table["rows"][0]["validation"]) == (16, 4)
    for row in table["rows"]:
        for column in ("pretrained", "random_init", "linear_probe"):
            assert 0 <= row[column] <= 1 and row[f"{column}_std"] >= 0
    assert "labels per class" in result.stdout and "linear probe" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--encoder", "text"], "error: --encoder text: this run has no such encoder; its encoders are: default"),
        (
            ["--set", "finetune.layer_decay=2"],
            "(--set finetune.layer_decay): finetune.layer_decay: Input should be less than or equal to 1",
        ),
        (["--set", "train.steps=5"], "error: --set train.steps=5: sslhub finetune changes only finetune.* keys"),
        (
            ["--set", "finetune.layer_decay=0.7", "--set", "finetune.compare=null"],
            "finetune.layer_decay: encoder ToyMlp has no numbered transformer blocks",
        ),
        (["--name", "nothing", "--resume"], "holds no fine-tune to resume"),
        (["--label", "y"], "error: --label applies to --data only"),
        (["--data", "no/such/folder"], "error: --data no/such/folder: no such file or folder"),
    ],
    ids=[
        "unknown_encoder",
        "bad_set",
        "not_finetune_key",
        "layer_decay_without_blocks",
        "nothing_to_resume",
        "label_without_data",
        "missing_data",
    ],
)
def test_bad_requests_get_a_message_not_a_traceback(pretrained_run: Path, args: list[str], message: str):
    result = finetune(pretrained_run, *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_damaged_checkpoint_on_resume_is_an_error(pretrained_run: Path):
    done = finetune(pretrained_run, "--name", "damaged", "--set", "finetune.steps=10", "--set", "finetune.compare=null")
    assert done.returncode == 0, done.stderr
    for checkpoint in (pretrained_run / "finetune" / "damaged" / "checkpoints").glob("step_*.pt"):
        checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    resumed = finetune(pretrained_run, "--name", "damaged", "--resume")
    assert resumed.returncode != 0 and "Traceback" not in resumed.stderr
    assert (
        "no usable checkpoint in" in resumed.stderr
        and "start the fine-tune again under another --name" in resumed.stderr
    )


def test_a_started_fine_tune_is_not_overwritten(early_stopped: Path, pretrained_run: Path):
    again = finetune(pretrained_run, "--name", "early")
    assert again.returncode != 0
    assert "already holds a fine-tune; continue it with --resume or choose another --name" in again.stderr


def test_a_run_without_labels_asks_for_data():
    class Unlabeled:
        run_dir = Path("runs/unlabeled")

        def labeled_split(self, modality):
            return None

    with pytest.raises(
        SSLHubError, match="runs/unlabeled has no labeled split .*: give labeled data with --data SOURCE"
    ):
        labeled_split(Unlabeled(), object(), {"data": None})


def test_a_finetune_section_is_validated_with_lines(tmp_path: Path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.read_text() + "finetune:\n  mode: partly\n  compare: {shots: [5, 5]}\n")
    result = sslhub("validate", str(recipe), *PLUGINS)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    line = len(RECIPE.read_text().splitlines())
    assert f"  {recipe}:{line + 2}: finetune.mode: Input should be 'full' or 'frozen'" in lines
    assert f"  {recipe}:{line + 3}: finetune.compare.shots: label counts must be distinct" in lines


def test_the_classifier_export_is_called_as_contract_1_says(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import sslhub.export
    from sslhub.finetune import export_model
    from sslhub.finetune_model import Classifier

    calls = []

    def export_classifier(encoder, head, modality, class_names, out_dir, *, opset=None, name="classifier"):
        calls.append((encoder, head, modality, class_names, out_dir, opset))
        return {"passed": True, "summary": "ok", "cases": [1, 2]}

    monkeypatch.setattr(sslhub.export, "export_classifier", export_classifier, raising=False)
    encoder = torch.nn.Linear(3, 4)
    encoder.feature_dim = 4
    classifier = Classifier(encoder, num_classes=2)
    job = type("Job", (), {"modality": "the modality", "out_dir": tmp_path, "opset": 18})()
    assert export_model(job, classifier, ["a", "b"]) == {"passed": True, "summary": "ok"}
    assert calls == [(classifier.encoder, classifier.head, "the modality", ["a", "b"], tmp_path / "model", 18)]


def test_a_tampered_request_is_refused_on_resume(pretrained_run: Path):
    folder = pretrained_run / "finetune" / "tampered"
    folder.mkdir(parents=True)
    request = {"overrides": ["train.steps=1"], "data": None, "label": None, "group": None}
    (folder / "request.json").write_text(json.dumps({**request, "test_fraction": 0.3, "split_seed": "0"}))
    result = finetune(pretrained_run, "--name", "tampered", "--resume")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "is not a fine-tune request: split_seed: missing or of the wrong type; encoder: missing" in result.stderr
    assert "overrides: each must be a finetune.KEY=VALUE string" in result.stderr


@pytest.mark.slow
def test_two_gloo_processes_fine_tune_like_one(pretrained_run: Path):
    """Under torchrun each process takes half of every batch; DDP averages: the same steps as one process."""
    options = [
        "finetune.steps=30",
        "finetune.validate_every=10",
        "finetune.early_stopping=null",
        "finetune.compare=null",
    ]
    options += ["finetune.schedule=constant"]
    arguments = ["finetune", str(pretrained_run), *PLUGINS, *[a for s in options for a in ("--set", s)]]
    single = finetune(pretrained_run, "--name", "single", *arguments[2 + len(PLUGINS) :])
    assert single.returncode == 0, single.stderr
    command = torchrun_command()
    command += ["-m", "sslhub", *arguments, "--name", "two"]
    two = subprocess.run(command, capture_output=True, text=True, env={**sslhub_env(), **ONE_THREAD}, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one, both = pretrained_run / "finetune" / "single", pretrained_run / "finetune" / "two"
    assert results(both)["world_size"] == 2 and results(one)["world_size"] == 1
    for name in ("encoder.safetensors", "head.safetensors"):
        a, b = load_file(one / name), load_file(both / name)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    steps = [json.loads(line)["step"] for line in (both / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 10, 20, 20, 30, 30]  # rank 0 alone writes: a loss line and a validation line each


def test_a_partial_optimizer_or_early_stopping_keeps_the_fine_tuning_defaults():
    from sslhub.recipe import FinetuneSpec

    spec = FinetuneSpec.model_validate({"optimizer": {"weight_decay": 0.05}, "early_stopping": {"patience": 2}})
    assert (spec.optimizer.lr, spec.optimizer.weight_decay) == (1e-2, 0.05)
    assert (spec.early_stopping.monitor, spec.early_stopping.patience) == ("val_loss", 2)
    assert FinetuneSpec.model_validate({"optimizer": {"name": "sgd", "lr": 0.5}}).optimizer.lr == 0.5
