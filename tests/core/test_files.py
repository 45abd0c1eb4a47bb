"""The file-decoder interface (sslhub.files): the folder-escape guard, choosing a decoder, and a
third-party decoder installed with pip that `sslhub embed` uses for its extension, without torch."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from onnx_models import mean_model
from toy_runs import sslhub_env

import sslhub
from sslhub.decoding import InputDecoder
from sslhub.files import (
    DecodeError,
    FileDecoder,
    ModelInputs,
    RegisteredDecoder,
    choose_decoder,
    installed_decoders,
    path_inside,
)


def test_path_inside_keeps_files_inside_and_refuses_the_ways_out(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "tokenizer.json").write_text("{}")
    assert path_inside(folder, "sub/tokenizer.json", what="tokenizer_file") == folder / "sub" / "tokenizer.json"
    (tmp_path / "secret.txt").write_text("outside")
    (folder / "link.json").symlink_to(tmp_path / "secret.txt")
    for name in ["../secret.txt", str(tmp_path / "secret.txt"), "sub/../../secret.txt", "link.json", "", "."]:
        with pytest.raises(DecodeError, match=r"tokenizer_file .* leads outside"):
            path_inside(folder, name, what="tokenizer_file")


def test_path_inside_raises_the_error_class_asked_for(tmp_path):
    class Refused(sslhub.SSLHubError):
        pass

    with pytest.raises(Refused, match="weights '../w' leads outside"):
        path_inside(tmp_path, "../w", what="weights", error=Refused)


class _Points(FileDecoder):
    kind = "points"
    extensions = (".xyz",)

    @classmethod
    def accepts(cls, model: ModelInputs) -> bool:
        return model.input_names == ("points",)

    def read(self, path: Path) -> Iterator[tuple[str, np.ndarray]]:
        yield str(path), np.loadtxt(path, dtype=np.float32, ndmin=2)

    def collate(self, samples: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {"points": np.stack(samples)}


class _AlsoPoints(_Points):
    pass


class _Broken(_Points):
    @classmethod
    def accepts(cls, model: ModelInputs) -> bool:
        raise KeyError("image_size")


def _model(tmp_path: Path, names: tuple[str, ...] = ("points",)) -> ModelInputs:
    return ModelInputs(names, {}, tmp_path)


def test_the_one_accepting_decoder_is_chosen_and_none_means_arrays_only(tmp_path):
    registered = [RegisteredDecoder("points", _Points, "sslhub-test")]
    chosen = choose_decoder(_model(tmp_path), registered)
    assert isinstance(chosen, _Points) and chosen.model.input_names == ("points",)
    decoder = InputDecoder(_model(tmp_path, ("vector",)), registered)
    assert decoder.kind == "arrays" and decoder.accepted_extensions() == (".npy", ".npz")
    (tmp_path / "a.xyz").write_text("1 2 3\n")
    with pytest.raises(DecodeError, match=r"reads \.npy, \.npz files, not \.xyz \(no installed file decoder accepts"):
        decoder.expand([tmp_path / "a.xyz"])


def test_two_decoders_for_one_model_clash_by_name_and_distribution(tmp_path):
    registered = [RegisteredDecoder("points", _Points, "dist-a"), RegisteredDecoder("dots", _AlsoPoints, "dist-b")]
    with pytest.raises(DecodeError, match=r"several file decoders .* 'points' \(from dist-a\), 'dots' \(from dist-b\)"):
        choose_decoder(_model(tmp_path), registered)


def test_a_decoder_failing_to_answer_is_named(tmp_path):
    with pytest.raises(DecodeError, match=r"file decoder 'broken' \(from dist-c\) failed .* KeyError"):
        choose_decoder(_model(tmp_path), [RegisteredDecoder("broken", _Broken, "dist-c")])


def test_batches_keep_sources_and_split_at_arrays_files(tmp_path):
    for name, rows in [("a.xyz", "1 1 1\n3 3 3\n"), ("b.xyz", "0 0 0\n2 2 2\n")]:
        (tmp_path / name).write_text(rows)
    np.save(tmp_path / "c.npy", np.zeros((3, 2, 3), np.float32))
    decoder = InputDecoder(_model(tmp_path), [RegisteredDecoder("points", _Points, "sslhub-test")])
    batches = list(decoder.batches([tmp_path], batch_size=1))
    assert [sources for sources, _ in batches] == [
        [str(tmp_path / "a.xyz")],
        [str(tmp_path / "b.xyz")],
        [f"{tmp_path / 'c.npy'}:{i}" for i in range(3)],
    ]
    assert batches[0][1]["points"].shape == (1, 2, 3)


def test_builtin_decoders_are_entry_points_and_load_without_torch():
    script = (
        "import sys\n"
        "from sslhub.files import installed_decoders\n"
        "found = {d.name: d.decoder.kind for d in installed_decoders() if d.distribution == 'sslhub'}\n"
        "assert found == {'audio': 'audio', 'image': 'image', 'text': 'text'}, found\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=sslhub_env(), timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_a_blocked_plugin_takes_its_decoders_with_it(monkeypatch):
    def builtin(**kwargs) -> set[str]:
        return {d.name for d in installed_decoders(**kwargs) if d.distribution == "sslhub"}

    monkeypatch.delenv("SSLHUB_DISABLE_PLUGINS", raising=False)
    assert builtin() == {"audio", "image", "text"}
    # the plugin's name (vision) blocks the decoder of its package (sslhub_vision.files:ImageDecoder)
    assert builtin(blocked=["vision"]) == {"audio", "text"}
    assert builtin(blocked=["audio"]) == {"image", "text"}  # the decoder's own name
    monkeypatch.setenv("SSLHUB_DISABLE_PLUGINS", "text, vision")
    assert builtin() == {"audio"}
    monkeypatch.setenv("SSLHUB_DISABLE_PLUGINS", "sslhub")  # the distribution: every built-in
    assert builtin() == set()


@pytest.fixture
def points_model(tmp_path: Path) -> Path:
    """A model taking ``points`` [B, N, 3] -> their mean [B, 3], whose preprocessing scales points by 2."""
    folder = tmp_path / "points-model"
    mean_model(folder / "model.onnx", {"points": 3}, {"input_spec": {"preprocessing": {"scale": 2.0}}})
    return folder


def test_sslhub_embed_reads_a_third_party_modality_through_its_installed_decoder(
    points_model, installed_plugins, tmp_path
):
    clouds = tmp_path / "clouds"
    clouds.mkdir()
    (clouds / "one.xyz").write_text("0 0 0\n2 4 6\n")
    (clouds / "two.xyz").write_text("1 1 1\n1 1 1\n")
    (clouds / "notes.md").write_text("not a point file, skipped in a folder\n")
    out = tmp_path / "emb.npy"
    script = (
        "import sys\n"
        "from sslhub.cli import main\n"
        f"code = main(['embed', {str(points_model)!r}, {str(clouds)!r}, '--out', {str(out)!r}])\n"
        "assert code == 0, code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = sslhub_env()
    env["PYTHONPATH"] = f"{installed_plugins}:{env['PYTHONPATH']}"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "embedded 2 inputs (points)" in result.stdout
    # the decoder's scaling (from the model's metadata) applied before the model's mean
    np.testing.assert_allclose(np.load(out), [[2, 4, 6], [2, 2, 2]])
    assert out.with_suffix(".sources.txt").read_text().split() == [str(clouds / "one.xyz"), str(clouds / "two.xyz")]


def test_without_the_decoder_installed_the_extension_is_refused_with_a_hint(points_model, tmp_path):
    (tmp_path / "one.xyz").write_text("0 0 0\n")
    script = f"from sslhub.cli import main\nraise SystemExit(main(['embed', {str(points_model)!r}, {str(tmp_path / 'one.xyz')!r}]))\n"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=sslhub_env(), timeout=60
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "no installed file decoder accepts its inputs ['points']" in result.stderr


def _distribution_with_decoders(site: Path, entry_points: str) -> Path:
    """A minimal installed distribution (a .dist-info folder) declaring ``sslhub.files`` entry points."""
    info = site / "sslhub_test_broken-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sslhub-test-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[sslhub.files]\n{entry_points}\n")
    return site


def test_a_decoder_that_fails_to_load_is_named_and_left_out(tmp_path, monkeypatch, caplog):
    from sslhub.files import installed_decoders

    site = _distribution_with_decoders(tmp_path, "missing = sslhub_no_such_module:Decoder\nnot_one = json:dumps")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("SSLHUB_STRICT_PLUGINS", raising=False)
    names = {d.name for d in installed_decoders()}
    assert not names & {"missing", "not_one"}
    warned = caplog.text
    assert "file decoder 'missing' (sslhub_no_such_module:Decoder, from sslhub-test-broken) failed to load" in warned
    assert "ModuleNotFoundError" in warned
    assert "file decoder 'not_one' (json:dumps, from sslhub-test-broken) failed to load" in warned
    assert "not a sslhub.FileDecoder subclass" in warned
    monkeypatch.setenv("SSLHUB_STRICT_PLUGINS", "1")
    with pytest.raises(DecodeError, match="file decoder 'missing' .* failed to load"):
        installed_decoders()


def _model_with_external_weights(folder: Path, location: str) -> Path:
    """A model ``x + w`` whose ``w`` is stored in the external file ``location``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.ones(3, np.float32), "w")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, "offset": "0", "length": "12"}.items():
        weights.external_data.add(key=key, value=value)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    model.metadata_props.add(key="sslhub.feature_dim", value="3")
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    return folder


@pytest.mark.parametrize("way_out", ["parent", "absolute", "link"])
def test_a_model_whose_weights_file_lies_outside_its_folder_is_refused(tmp_path, way_out):
    from sslhub.embed_files import EmbedError, FileEmbedder

    secret = tmp_path / "secret.bin"
    np.arange(3, dtype=np.float32).tofile(secret)
    location = {"parent": "../secret.bin", "absolute": str(secret), "link": "weights.bin"}[way_out]
    folder = _model_with_external_weights(tmp_path / "model", location)
    if way_out == "link":
        (folder / "weights.bin").symlink_to(secret)
    with pytest.raises(EmbedError, match=f"model.onnx: the external data of tensor 'w' {location!r} leads outside"):
        FileEmbedder(folder)


def test_a_model_whose_weights_file_is_inside_its_folder_loads(tmp_path):
    from sslhub.embed_files import FileEmbedder

    folder = _model_with_external_weights(tmp_path / "model", "weights.bin")
    np.full(3, 2, np.float32).tofile(folder / "weights.bin")
    np.testing.assert_allclose(FileEmbedder(folder).model.run({"x": np.ones((1, 3), np.float32)}), [[3, 3, 3]])
