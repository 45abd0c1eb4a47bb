"""`sslhub embed` and `sslhub export --include-head` / plugin exporters, through the real command.

Uses the toy plugin (vectors, an MLP encoder, a contrastive objective with a linear head) so
the run takes seconds; file decoding of images, text and audio is tested in each plugin's tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from toy_runs import BLOCK_BUILTINS, DATA, RECIPE, sslhub, sslhub_env

from sslhub.embed_files import EmbedError, FileEmbedder, resolve_model_dir


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy") / "run"
    result = sslhub(
        "run", str(RECIPE), "-p", "toy_plugin", *BLOCK_BUILTINS, "--out", str(out),
        "--set", "train.steps=6", "--set", "evaluate.enabled=false", "--progress", "off",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (out / "onnx" / "model.onnx").is_file()
    return out


def _pytorch(run_dir: Path, vectors: np.ndarray, head: bool = False) -> np.ndarray:
    """Embeddings by the run's PyTorch modules, loaded from its newest checkpoint."""
    if str(DATA) not in sys.path:
        sys.path.insert(0, str(DATA))
    from sslhub.cli import _load_run
    from sslhub.components import DEFAULT_ENCODER_KEY

    _, trained = _load_run(run_dir, ["toy_plugin", *BLOCK_BUILTINS[1::2]])
    encoder, objectives = trained.encoders[DEFAULT_ENCODER_KEY], trained.objectives
    encoder.eval()
    with torch.no_grad():
        pooled = encoder({"vector": torch.from_numpy(vectors)}).pooled
        return (objectives[0].head(pooled) if head else pooled).numpy()


def test_embed_npy_and_npz_files_of_a_run(exported_run, tmp_path):
    rng = np.random.default_rng(0)
    single, several = rng.normal(size=(1, 16)).astype(np.float32), rng.normal(size=(5, 16)).astype(np.float32)
    np.save(tmp_path / "one.npy", single)
    np.savez(tmp_path / "many.npz", vector=several)

    result = sslhub("embed", str(exported_run), str(tmp_path / "one.npy"), str(tmp_path / "many.npz"),
                    "--out", str(tmp_path / "vectors.npy"), "--batch-size", "2")  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "embedded 6 inputs" in result.stdout
    vectors = np.load(tmp_path / "vectors.npy")
    np.testing.assert_allclose(vectors, _pytorch(exported_run, np.concatenate([single, several])), atol=1e-5)
    sources = (tmp_path / "vectors.sources.txt").read_text().splitlines()
    assert sources == [str(tmp_path / "one.npy")] + [f"{tmp_path / 'many.npz'}:{i}" for i in range(5)]


def test_include_head_exports_the_objective_head(exported_run, tmp_path):
    result = sslhub("export", str(exported_run), "-p", "toy_plugin", *BLOCK_BUILTINS,
                    "--include-head", "head", "--out", str(tmp_path / "with_head"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "head toy_contrastive.head" in result.stdout
    metadata = json.loads((tmp_path / "with_head" / "metadata.json").read_text())
    assert metadata["output"]["head"] == "toy_contrastive.head" and metadata["output"]["name"] == "head"
    assert metadata["feature_dim"] == 8  # the head's width, not the encoder's 16

    vectors = np.random.default_rng(1).normal(size=(3, 16)).astype(np.float32)
    embedded = FileEmbedder(tmp_path / "with_head", threads=1).model.run({"vector": vectors})
    np.testing.assert_allclose(embedded, _pytorch(exported_run, vectors, head=True), atol=1e-5)


def test_unknown_head_lists_the_available_ones(exported_run):
    result = sslhub("export", str(exported_run), "-p", "toy_plugin", *BLOCK_BUILTINS, "--include-head", "projector")
    assert result.returncode == 1
    assert "--include-head 'projector' is not a head of this run; available: toy_contrastive.head" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_plugin_hook_can_take_over_the_export(exported_run, tmp_path):
    result = sslhub("export", str(exported_run), "-p", "toy_plugin", "-p", "toy_export_plugin", *BLOCK_BUILTINS,
                    "--out", str(tmp_path / "by_plugin"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    metadata = json.loads((tmp_path / "by_plugin" / "metadata.json").read_text())
    assert metadata["exported_by"] == "plugin:toy_export_plugin"
    assert metadata["verification"]["passed"] and len(metadata["verification"]["checks"]) == 2


def test_a_failing_plugin_hook_is_named(exported_run, tmp_path):
    result = sslhub("export", str(exported_run), "-p", "toy_plugin", "-p", "toy_export_plugin", *BLOCK_BUILTINS,
                    "--out", str(tmp_path / "x"), env={"TOY_EXPORT_FAIL": "1"})  # fmt: skip
    assert result.returncode == 1
    assert "plugin 'toy_export_plugin': sslhub_export_encoder raised RuntimeError" in result.stderr
    assert "-p no:PLUGIN" in result.stderr and "Traceback" not in result.stderr


def test_run_dirs_and_export_folders_resolve(exported_run, tmp_path):
    assert resolve_model_dir(exported_run) == exported_run / "onnx"
    assert resolve_model_dir(exported_run / "onnx" / "model.onnx") == exported_run / "onnx"
    bare_run = tmp_path / "bare"
    (bare_run / "checkpoints").mkdir(parents=True)
    with pytest.raises(EmbedError, match="run without an ONNX export: run `sslhub export"):
        resolve_model_dir(bare_run)
    several = tmp_path / "several" / "onnx"
    for key in ("image", "text"):
        (several / key).mkdir(parents=True)
        (several / key / "model.onnx").write_bytes(b"")
    with pytest.raises(EmbedError, match=r"one model per encoder \['image', 'text'\]: choose one with --encoder"):
        resolve_model_dir(several.parent)
    assert resolve_model_dir(several.parent, "text") == several / "text"
    with pytest.raises(EmbedError, match="has no encoder 'audio'"):
        resolve_model_dir(several.parent, "audio")
    (tmp_path / "nothing" / "onnx" / "image").mkdir(parents=True)
    with pytest.raises(EmbedError, match="holds no .onnx model: export a run first"):
        resolve_model_dir(tmp_path / "nothing")


def test_embed_errors_are_messages_not_tracebacks(exported_run, tmp_path):
    (tmp_path / "notes.txt").write_text("not an array\n")
    np.savez(tmp_path / "wrong.npz", other=np.zeros((1, 16), np.float32))
    cases = {
        str(tmp_path / "missing"): "does not exist",
        str(tmp_path / "notes.txt"): "this arrays model reads .npy, .npz files, not .txt",
        str(tmp_path / "wrong.npz"): "has arrays ['other'], the model also needs ['vector']",
    }
    for path, message in cases.items():
        result = sslhub("embed", str(exported_run), path, "--out", str(tmp_path / "e.npy"))
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_export_names_the_recorded_plugins_but_never_imports_them(exported_run, tmp_path):
    """-p given to `sslhub run` is recorded, but a run directory is untrusted: export says what to add."""
    environment = json.loads((exported_run / "environment.json").read_text())
    assert environment["plugin_args"] == ["toy_plugin", *BLOCK_BUILTINS[1::2]]
    result = sslhub("export", str(exported_run), "--out", str(tmp_path / "again"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the run was trained with 'toy_plugin' loaded with -p" in result.stderr
    # where it was imported from, so the hint works from any folder
    assert f"add -p {DATA / 'toy_plugin.py'} to the command" in result.stderr
    assert not (tmp_path / "again").exists()
    # following the hint works from a folder where the module name alone would not import
    elsewhere = {"PYTHONPATH": ""}
    command = ["export", str(exported_run), "--out", str(tmp_path / "again"), "-p", str(DATA / "toy_plugin.py")]
    result = subprocess.run(
        [sys.executable, "-m", "sslhub", *command, *BLOCK_BUILTINS],
        capture_output=True, text=True, cwd=tmp_path, env={**sslhub_env(), **elsewhere}, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_embed_does_not_import_torch(exported_run, tmp_path):
    """A deployer's machine needs onnxruntime and numpy for `sslhub embed`, not PyTorch."""
    np.save(tmp_path / "one.npy", np.zeros((2, 16), np.float32))
    script = (
        "import sys\n"
        "from sslhub.cli import main\n"
        f"code = main(['embed', {str(exported_run)!r}, {str(tmp_path / 'one.npy')!r}, '--out', {str(tmp_path / 'e.npy')!r}])\n"
        "assert code == 0, code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=sslhub_env(), timeout=120
    )
    assert result.returncode == 0, result.stderr
