"""sslhub.load_encoder from a run, a fine-tune and an export folder, and sslhub export --format."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from toy_runs import BLOCK_BUILTINS, final_weights, sslhub, toy_run_command

import sslhub as sslhub_api
from sslhub.errors import SSLHubError
from sslhub.export_formats import parse_formats
from sslhub.loading import LoadError

pytestmark = pytest.mark.usefixtures("sslhub_env")

TOY = ["-p", "toy_plugin", *BLOCK_BUILTINS]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 20-step toy run, exported as ONNX, safetensors and native (the toy MLP has no native format)."""
    run_dir = tmp_path_factory.mktemp("loading") / "run"
    command = toy_run_command(run_dir, "--set", "train.steps=20", "--set", "evaluate.enabled=false")
    from toy_runs import sslhub_env

    subprocess.run(command, check=True, capture_output=True, env=sslhub_env(), timeout=240)
    result = sslhub("export", str(run_dir), *TOY, "--format", "onnx,safetensors,native")
    assert result.returncode == 0, result.stderr
    assert f"wrote {run_dir / 'onnx' / 'encoder.safetensors'}" in result.stdout
    return run_dir


def _mlp(weights: dict[str, torch.Tensor], x: torch.Tensor, prefix: str = "") -> torch.Tensor:
    """The toy MLP computed by hand from its weights: the reference every load is compared with."""
    hidden = torch.relu(x @ weights[f"{prefix}net.0.weight"].T + weights[f"{prefix}net.0.bias"])
    return hidden @ weights[f"{prefix}net.2.weight"].T + weights[f"{prefix}net.2.bias"]


def _trained(run_dir: Path) -> dict[str, torch.Tensor]:
    return {
        k.removeprefix("encoder.default."): v for k, v in final_weights(run_dir).items() if k.startswith("encoder.")
    }


def _load(path: Path, **options) -> sslhub_api.LoadedEncoder:
    return sslhub_api.load_encoder(path, plugins=["toy_plugin"], **options)


# -- the three sources ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_loads_with_its_newest_checkpoint(toy_run):
    model = _load(toy_run)
    assert isinstance(model, torch.nn.Module) and not model.training
    assert model.input_names == ("vector",) and model.feature_dim == 16
    x = torch.randn(5, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _mlp(_trained(toy_run), x))
        torch.testing.assert_close(model({"vector": x, "label": torch.zeros(5)}), model(vector=x))


def test_an_export_folder_loads_without_the_run(toy_run, tmp_path):
    moved = tmp_path / "shared-export"
    shutil.copytree(toy_run / "onnx", moved)
    model = _load(moved)
    x = torch.randn(4, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _mlp(_trained(toy_run), x))
    torch.testing.assert_close(
        load_file(moved / "encoder.safetensors")["net.0.weight"], _trained(toy_run)["net.0.weight"]
    )


def _finetune(run: Path, name: str, weights: dict[str, torch.Tensor], **record) -> Path:
    """A fine-tune folder as DOWNSTREAM contract 2 describes it (the fine-tuning helper writes real ones)."""
    folder = run / "finetune" / name
    folder.mkdir(parents=True, exist_ok=True)
    record = {"run_dir": "../..", "encoder_key": "default", "class_names": ["a", "b", "c", "d"], **record}
    (folder / "finetune.json").write_text(json.dumps(record))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "encoder.safetensors"))
    return folder


def test_a_finetune_folder_loads_the_finetuned_weights(toy_run):
    tuned = {k: v + 0.1 * torch.randn_like(v) for k, v in _trained(toy_run).items()}
    folder = _finetune(toy_run, "tuned", tuned)
    model = _load(folder)
    x = torch.randn(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _mlp(tuned, x))
        assert not torch.allclose(model(x), _mlp(_trained(toy_run), x))


def test_preprocess_reads_array_files_as_sslhub_embed_does(toy_run, tmp_path):
    model = _load(toy_run / "onnx")
    vectors = np.random.default_rng(0).standard_normal((6, 16)).astype(np.float32)
    np.save(tmp_path / "vectors.npy", vectors)
    inputs = model.preprocess([tmp_path / "vectors.npy"])
    torch.testing.assert_close(inputs["vector"], torch.from_numpy(vectors))
    with pytest.raises(SSLHubError, match="texts= applies to text encoders"):
        model.preprocess(texts=["hello"])


# -- sslhub export --format ----------------------------------------------------------------------


def test_export_records_the_formats_written(toy_run):
    metadata = json.loads((toy_run / "onnx" / "metadata.json").read_text())
    assert metadata["metadata"]["formats"] == ["onnx", "safetensors"]  # the toy MLP has no native format
    record = json.loads((toy_run / "onnx" / "encoder.json").read_text())
    assert record["formats"] == ["onnx", "safetensors"] and record["native"] == {}
    assert record["encoder"] == {"name": "toy_mlp", "params": {"hidden": 32, "out": 16}}
    assert not (toy_run / "onnx" / "native").exists()


def test_safetensors_alone_writes_no_onnx_and_onnx_stays_the_default(toy_run, tmp_path):
    result = sslhub("export", str(toy_run), *TOY, "--format", "safetensors", "--out", str(tmp_path / "weights"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["encoder.json", "encoder.safetensors"]
    result = sslhub("export", str(toy_run), *TOY, "--out", str(tmp_path / "default"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "default" / "model.onnx").is_file() and not (tmp_path / "default" / "encoder.json").exists()
    with pytest.raises(LoadError, match=r"holds an ONNX export only.*--format safetensors"):
        _load(tmp_path / "default")


def test_format_lists():
    assert parse_formats("onnx") == ("onnx",)
    assert parse_formats(" native , onnx") == ("onnx", "safetensors", "native")  # native needs the weights
    with pytest.raises(SSLHubError, match=r"--format 'onnx,pickle': unknown format\(s\) \['pickle'\]"):
        parse_formats("onnx,pickle")
    with pytest.raises(SSLHubError, match=r"unknown format\(s\) \(none given\)"):
        parse_formats(",")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--format", "onnx,pickle"], "unknown format(s) ['pickle']; choose a comma list of onnx, safetensors, native"),
        (["--format", "safetensors", "--include-head", "x.y"], "apply to the onnx format; add it to --format"),
    ],
)
def test_bad_format_options_are_refused(toy_run, options, message):
    result = sslhub("export", str(toy_run), *TOY, *options)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr


# -- bad folders ---------------------------------------------------------------------------------


def test_a_folder_that_is_none_of_these(tmp_path):
    with pytest.raises(LoadError, match="is not a folder"):
        _load(tmp_path / "missing")
    with pytest.raises(LoadError, match=r"is not a run directory \(recipe.yaml\), a fine-tune folder"):
        _load(tmp_path)


@pytest.fixture
def export_copy(toy_run, tmp_path) -> Path:
    folder = tmp_path / "export"
    shutil.copytree(toy_run / "onnx", folder)
    return folder


def test_a_missing_weights_file(export_copy):
    (export_copy / "encoder.safetensors").unlink()
    with pytest.raises(LoadError, match="encoder.safetensors is missing"):
        _load(export_copy)


def test_a_corrupt_weights_file(export_copy):
    (export_copy / "encoder.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(LoadError, match="encoder.safetensors is not a readable safetensors file"):
        _load(export_copy)


def test_weights_of_another_model(export_copy):
    save_file({"net.0.weight": torch.zeros(3, 3)}, str(export_copy / "encoder.safetensors"))
    with pytest.raises(LoadError, match="does not fit the encoder it describes"):
        _load(export_copy)


def test_a_corrupt_or_foreign_description(export_copy):
    (export_copy / "encoder.json").write_text("{not json")
    with pytest.raises(LoadError, match="encoder.json: not readable JSON"):
        _load(export_copy)
    (export_copy / "encoder.json").write_text(json.dumps({"format": {"name": "other"}}))
    with pytest.raises(LoadError, match="not an sslhub encoder description"):
        _load(export_copy)


def test_an_encoder_name_no_plugin_registers(export_copy):
    record = json.loads((export_copy / "encoder.json").read_text())
    record["encoder"]["name"] = "evil.module:Thing"
    (export_copy / "encoder.json").write_text(json.dumps(record))
    with pytest.raises(LoadError, match=r"encoder.json: encoder 'evil.module:Thing'"):
        _load(export_copy)


def test_weights_linked_from_outside_are_not_read(export_copy, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(export_copy / "encoder.safetensors", outside)
    (export_copy / "encoder.safetensors").symlink_to(outside)
    with pytest.raises(LoadError, match="leads outside"):
        _load(export_copy)


def test_an_unknown_encoder_key(toy_run):
    with pytest.raises(LoadError, match=r"has no encoder 'text'; its encoders are \['default'\]"):
        _load(toy_run, encoder="text")
    with pytest.raises(LoadError, match=r"holds encoder 'default', not 'text'"):
        _load(_finetune(toy_run, "key", _trained(toy_run)), encoder="text")


def test_a_finetune_must_sit_inside_its_run(toy_run, tmp_path):
    elsewhere = tmp_path / "copy"
    shutil.copytree(toy_run, elsewhere, ignore=shutil.ignore_patterns("finetune"))
    folder = _finetune(toy_run, "escape", _trained(toy_run), run_dir=str(elsewhere))
    with pytest.raises(LoadError, match="is not a folder enclosing the fine-tune"):
        _load(folder)


def test_a_run_trained_with_a_named_plugin_does_not_import_it(toy_run):
    with pytest.raises(SSLHubError, match=r"add -p \S*toy_plugin(\.py)? to the command"):
        sslhub_api.load_encoder(toy_run)


PAIR_RECIPE = """\
name: pair
data: {modality: toy_vectors, samples: 128}
augment: [{name: toy_noise}]
encoders:
  left: {name: toy_mlp, out: 16}
  right: {name: toy_mlp, out: 8}
objectives:
  - {name: toy_pair_contrastive}
train: {steps: 2, batch_size: 64, checkpoint_every: 2}
evaluate: {enabled: false}
export: null
report: {enabled: false}
"""


def test_several_encoders_load_by_key_from_the_run_and_the_export(tmp_path):
    from sslhub.catalog import Catalog
    from sslhub.engine import Run
    from sslhub.recipe import resolve_recipe
    from sslhub.recipe_yaml import load_recipe_text

    plugins = ["toy_plugin", "toy_pair_plugin"]
    catalog = Catalog.load(plugins, entry_points=False, python_registrations=False)
    run = Run(resolve_recipe(load_recipe_text(PAIR_RECIPE, "pair.yaml"), catalog), tmp_path / "run")
    run.execute()
    trained = run.load_trained()
    results = run.export_weights(trained.encoders, trained.modality, ("safetensors",))
    assert sorted(results) == ["left", "right"]
    x = torch.randn(2, 16)
    for key, width in (("left", 16), ("right", 8)):
        from_run = sslhub_api.load_encoder(tmp_path / "run", encoder=key, plugins=plugins)
        from_export = sslhub_api.load_encoder(tmp_path / "run" / "onnx", encoder=key, plugins=plugins)
        with torch.no_grad():
            expected = trained.encoders[key]({"vector": x}).pooled
            assert from_run(x).shape == (2, width)
            torch.testing.assert_close(from_run(x), expected)
            torch.testing.assert_close(from_export(x), expected)
    with pytest.raises(
        LoadError, match=r"holds one export per encoder \['left', 'right'\]: choose one with encoder=KEY"
    ):
        sslhub_api.load_encoder(tmp_path / "run" / "onnx", plugins=plugins)
    with pytest.raises(LoadError, match=r"has no encoder 'middle'; it has \['left', 'right'\]"):
        sslhub_api.load_encoder(tmp_path / "run" / "onnx", encoder="middle", plugins=plugins)
