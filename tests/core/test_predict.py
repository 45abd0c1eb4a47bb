"""`sslhub predict` with a classifier built on a real toy run: output equals PyTorch's, errors are messages.

The classifier is what a fine-tune leaves: the run's encoder (loaded as `sslhub export` loads
it), a seeded ``nn.Linear(D, C)`` head, and :func:`sslhub.export.export_classifier` into a
fine-tune folder's ``model/``. Decoding of images and text is covered in the vision and text
plugins' tests (tests/plugins/*/test_*_predict.py); here the inputs are arrays.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from toy_runs import BLOCK_BUILTINS, DATA, RECIPE, sslhub, sslhub_env

from sslhub.export import export_classifier, export_encoder
from sslhub.predict import FileClassifier, PredictError, find_classifier

CLASSES = ["ant", "bee", "cat"]


def _load_toy_run(run_dir: Path):
    """The run's modality and encoder, loaded from its newest checkpoint."""
    if str(DATA) not in sys.path:
        sys.path.insert(0, str(DATA))
    from sslhub.cli import _load_run
    from sslhub.components import DEFAULT_ENCODER_KEY

    _, trained = _load_run(run_dir, ["toy_plugin", *BLOCK_BUILTINS[1::2]])
    return trained.modality, trained.encoders[DEFAULT_ENCODER_KEY].eval()


@pytest.fixture(scope="module")
def toy_classifier(tmp_path_factory) -> dict:
    """A toy run trained a few steps, and a fine-tune-like folder holding its exported classifier."""
    root = tmp_path_factory.mktemp("predict")
    run_dir = root / "run"
    result = sslhub(
        "run", str(RECIPE), "-p", "toy_plugin", *BLOCK_BUILTINS, "--out", str(run_dir), "--set", "train.steps=4",
        "--set", "evaluate.enabled=false", "--set", "export=null", "--progress", "off",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    modality, encoder = _load_toy_run(run_dir)
    torch.manual_seed(7)
    head = torch.nn.Linear(encoder.feature_dim, len(CLASSES))
    finetune_dir = run_dir / "finetune" / "few"
    report = export_classifier(encoder, head, modality, CLASSES, finetune_dir / "model")
    return {
        "run_dir": run_dir, "finetune_dir": finetune_dir, "modality": modality, "encoder": encoder, "head": head,
        "report": report,
    }  # fmt: skip


def _pytorch_probabilities(toy_classifier: dict, vectors: np.ndarray) -> np.ndarray:
    encoder, head = toy_classifier["encoder"], toy_classifier["head"]
    with torch.no_grad():
        return torch.softmax(head(encoder({"vector": torch.from_numpy(vectors)}).pooled), dim=-1).numpy()


def _inputs(folder: Path) -> tuple[list[Path], np.ndarray]:
    """Two .npy files and one .npz (7 samples in all), seeded."""
    rng = np.random.default_rng(3)
    arrays = [rng.normal(size=(n, 16)).astype(np.float32) * 3 for n in (1, 2, 4)]
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / "b.npy", folder / "a.npy", folder / "c.npz"]
    np.save(files[0], arrays[0])
    np.save(files[1], arrays[1])
    np.savez(files[2], vector=arrays[2])
    return files, np.concatenate(arrays)


@pytest.mark.slow
def test_the_report_says_the_export_passed(toy_classifier):
    report = toy_classifier["report"]
    assert report["passed"] and report["class_names"] == CLASSES
    assert Path(report["path"]) == toy_classifier["finetune_dir"] / "model" / "classifier.onnx"
    assert "passed" in report["summary"] and "classes: ant, bee, cat" in report["summary"]
    for check in report["checks"]:
        assert set(check["outputs"]) == {"logits", "probabilities"} and check["passed"]


def test_predict_csv_equals_pytorch_in_input_order(toy_classifier, tmp_path):
    files, vectors = _inputs(tmp_path / "in")
    out = tmp_path / "out" / "predictions.csv"

    result = sslhub("predict", str(toy_classifier["finetune_dir"]), *map(str, files), "--out", str(out),
                    "--batch-size", "2", "--threads", "1")  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "predicted 7 inputs (arrays)" in result.stdout and f"wrote {out}" in result.stdout
    with out.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["input", "predicted_class", "probability:ant", "probability:bee", "probability:cat"]
    expected = _pytorch_probabilities(toy_classifier, vectors)
    assert len(set(expected.argmax(1))) > 1, "the seeded head should not give every input the same class"
    sources = [str(files[0]), f"{files[1]}:0", f"{files[1]}:1", *(f"{files[2]}:{i}" for i in range(4))]
    assert [row[0] for row in rows[1:]] == sources
    assert [row[1] for row in rows[1:]] == [CLASSES[i] for i in expected.argmax(1)]
    np.testing.assert_allclose(np.array([row[2:] for row in rows[1:]], dtype=np.float64), expected, atol=1e-6)


def test_predict_jsonl_from_the_model_folder(toy_classifier, tmp_path):
    files, vectors = _inputs(tmp_path / "in")
    out = tmp_path / "predictions.jsonl"

    result = sslhub("predict", str(toy_classifier["finetune_dir"] / "model"), str(files[2]), "--out", str(out))

    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    expected = _pytorch_probabilities(toy_classifier, vectors[3:])
    assert [r["input"] for r in records] == [f"{files[2]}:{i}" for i in range(4)]
    assert [r["predicted_class"] for r in records] == [CLASSES[i] for i in expected.argmax(1)]
    assert all(list(r["probabilities"]) == CLASSES for r in records)
    got = np.array([list(r["probabilities"].values()) for r in records])
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_metadata_holds_the_class_names_and_the_encoder_export_facts(toy_classifier):
    model = onnx.load(str(toy_classifier["report"]["path"]), load_external_data=False)
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props["sslhub.task"] == "classification" and props["sslhub.class_names"] == CLASSES
    assert [o["name"] for o in props["sslhub.outputs"]] == ["logits", "probabilities"]
    assert props["sslhub.input_spec"]["dynamic_axes"] == {"vector": {"0": "batch"}}
    assert props["sslhub.output"]["head"] == "classifier" and props["sslhub.feature_dim"] == len(CLASSES)
    beside = json.loads(Path(toy_classifier["report"]["metadata_path"]).read_text())
    assert beside["class_names"] == CLASSES and beside["verification"]["passed"] is True
    assert [o.name for o in model.graph.output] == ["logits", "probabilities"]
    for output in model.graph.output:
        assert output.type.tensor_type.shape.dim[0].dim_param == "batch"


def test_predict_does_not_import_torch(toy_classifier, tmp_path):
    """A deployer's machine needs onnxruntime and numpy for `sslhub predict`, not PyTorch."""
    files, _ = _inputs(tmp_path / "in")
    script = (
        "import sys\n"
        "from sslhub.cli import main\n"
        f"code = main(['predict', {str(toy_classifier['finetune_dir'])!r}, {str(files[0])!r}, "
        f"'--out', {str(tmp_path / 'p.csv')!r}])\n"
        "assert code == 0, code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=sslhub_env(), timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "p.csv").read_text().count("\n") == 2


def test_model_folders_resolve(toy_classifier):
    model_dir = toy_classifier["finetune_dir"] / "model"
    assert find_classifier(toy_classifier["finetune_dir"]) == model_dir / "classifier.onnx"
    assert find_classifier(model_dir) == model_dir / "classifier.onnx"
    assert find_classifier(model_dir / "classifier.onnx") == model_dir / "classifier.onnx"
    assert FileClassifier(model_dir, threads=1).class_names == CLASSES


def test_a_classifier_under_another_name_is_found_by_its_metadata(toy_classifier, tmp_path):
    copy = tmp_path / "renamed"
    shutil.copytree(toy_classifier["finetune_dir"] / "model", copy)
    (copy / "classifier.onnx").rename(copy / "species.onnx")
    assert find_classifier(copy) == copy / "species.onnx"


def _fails(toy_classifier: dict, model: Path, *inputs: Path, out: str = "p.csv") -> str:
    """Run `sslhub predict`; assert it failed with a message and no traceback; return stderr."""
    result = sslhub("predict", str(model), *map(str, inputs), "--out", str(model.parent / out))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("error: ")
    return result.stderr


def test_an_encoder_export_is_pointed_to_sslhub_embed(toy_classifier, tmp_path):
    files, _ = _inputs(tmp_path / "in")
    export_encoder(toy_classifier["encoder"], toy_classifier["modality"], tmp_path / "encoder")
    message = _fails(toy_classifier, tmp_path / "encoder", files[0])
    assert "holds an encoder export (model.onnx), not a classifier" in message
    assert f"use `sslhub embed {tmp_path / 'encoder'} FILES...`" in message
    # the encoder's own file, named explicitly, lacks class names
    message = _fails(toy_classifier, tmp_path / "encoder" / "model.onnx", files[0])
    assert "has no class_names in its metadata" in message and "sslhub embed" in message


def test_a_pretraining_run_lists_its_fine_tuned_classifiers(toy_classifier, tmp_path):
    files, _ = _inputs(tmp_path / "in")
    message = _fails(toy_classifier, toy_classifier["run_dir"], files[0])
    assert "is a pretraining run; pass one of its fine-tuned classifiers" in message
    assert str(toy_classifier["finetune_dir"]) in message
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "recipe.yaml").write_text("name: x\n")
    assert "fine-tune it first (sslhub finetune" in _fails(toy_classifier, bare, files[0])


def test_metadata_without_class_names_is_refused(toy_classifier, tmp_path):
    files, _ = _inputs(tmp_path / "in")
    copy = tmp_path / "model"
    shutil.copytree(toy_classifier["finetune_dir"] / "model", copy)
    path = copy / "classifier.onnx"
    model = onnx.load(str(path), load_external_data=False)
    kept = [p for p in model.metadata_props if p.key != "sslhub.class_names"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save_model(model, str(path))
    message = _fails(toy_classifier, copy, files[0])
    assert f"{path} has no class_names in its metadata" in message


def test_unreadable_inputs_and_bad_options_are_messages(toy_classifier, tmp_path):
    model = toy_classifier["finetune_dir"]
    (tmp_path / "notes.txt").write_text("not an array\n")
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    np.savez(tmp_path / "wrong.npz", other=np.zeros((1, 16), np.float32))
    cases = {
        tmp_path / "missing.npy": "missing.npy does not exist",
        tmp_path / "notes.txt": "this arrays model reads .npy, .npz files, not .txt",
        tmp_path / "broken.npy": "broken.npy: not a readable numpy file",
        tmp_path / "wrong.npz": "has arrays ['other'], the model also needs ['vector']",
    }
    for path, expected in cases.items():
        result = sslhub("predict", str(model), str(path), "--out", str(tmp_path / "p.csv"))
        assert result.returncode == 1 and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    result = sslhub("predict", str(model), str(tmp_path / "wrong.npz"), "--out", str(tmp_path / "p.parquet"))
    assert result.returncode == 1 and "write predictions to a .csv or .jsonl file" in result.stderr
    assert not (tmp_path / "p.csv").exists()


def test_a_folder_of_several_classifiers_asks_for_one(toy_classifier, tmp_path):
    copy = tmp_path / "two"
    shutil.copytree(toy_classifier["finetune_dir"] / "model", copy)
    (copy / "classifier.onnx").rename(copy / "first.onnx")
    model = onnx.load(str(copy / "first.onnx"), load_external_data=False)
    onnx.save_model(model, str(copy / "second.onnx"))  # same weights file, another graph file
    with pytest.raises(PredictError, match=r"holds several classifiers \['first.onnx', 'second.onnx'\]"):
        find_classifier(copy)
