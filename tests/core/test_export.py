"""ONNX export: files, metadata, verification against PyTorch, errors, and loading elsewhere."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from sslhub import Encoder, EncoderOutput, Modality
from sslhub.embed import ExportedEncoder, embed_arrays, load_exported, read_exported_metadata, run_exported
from sslhub.export import ExportError, ExportReport, compare_outputs, export_encoder
from sslhub.export_module import cpu_float32_eval
from sslhub.export_verify import shorten_inputs, verification_cases
from sslhub.onnx_trace import torch_export_dynamic_shapes

# --- tiny components --------------------------------------------------------------------------


class TinyImageModality(Modality):
    """Images ``[B, 3, 8, 8]`` float32, normalised; only the batch axis varies."""

    name = "tiny_image"
    input_names = ("image",)

    def train_dataset(self):  # pragma: no cover - not used by export
        raise NotImplementedError

    def example_batch(self, batch_size, device="cpu"):
        return {"image": torch.randn(batch_size, 3, 8, 8, device=device), "label": torch.zeros(batch_size)}

    def input_spec(self):
        return {
            "inputs": {"image": {"dtype": "float32", "shape": ["batch", 3, 8, 8]}},
            "dynamic_axes": {"image": {0: "batch"}},
            "preprocessing": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "size": 8},
        }


class TinyConvEncoder(Encoder):
    """Two convolutions, global average pooling and a linear layer: ``[B, 3, H, W] -> [B, 16]``."""

    input_names = ("image",)

    def __init__(self, feature_dim: int = 16):
        super().__init__()
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 32, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Linear(32, 16)  # 2 KB of weights: large enough to go to the external data file

    def forward(self, batch):
        spatial = self.body(batch["image"])
        return EncoderOutput(pooled=self.head(spatial.mean(dim=(2, 3))), spatial=spatial)


class TinySequenceModality(Modality):
    """Token ids ``[B, T]`` int64 with a padding mask; batch and sequence axes vary."""

    name = "tiny_text"
    input_names = ("input_ids", "attention_mask")
    length = 12

    def train_dataset(self):  # pragma: no cover - not used by export
        raise NotImplementedError

    def example_batch(self, batch_size, device="cpu"):
        ids = torch.randint(1, 50, (batch_size, self.length))
        # at least 6 real tokens, so slicing to half the length keeps every row non-empty
        lengths = torch.randint(6, self.length + 1, (batch_size, 1))
        mask = (torch.arange(self.length) < lengths).long()
        return {"input_ids": ids * mask, "attention_mask": mask}

    def input_spec(self):
        axes = {0: "batch", 1: "sequence"}
        return {
            "inputs": {
                "input_ids": {"dtype": "int64", "shape": ["batch", "sequence"]},
                "attention_mask": {"dtype": "int64", "shape": ["batch", "sequence"]},
            },
            "dynamic_axes": {"input_ids": axes, "attention_mask": axes},
            "preprocessing": {"tokenizer": "tiny", "pad_id": 0},
        }


class TinyTokenEncoder(Encoder):
    """Embedding, a linear layer, and mean pooling over real tokens: ``[B, T] -> [B, 24]``."""

    input_names = ("input_ids", "attention_mask")
    feature_dim = 24

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 24)
        self.mix = nn.Linear(24, 24)

    def forward(self, batch):
        mask = batch["attention_mask"].unsqueeze(-1).float()
        tokens = torch.tanh(self.mix(self.embed(batch["input_ids"])))
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return EncoderOutput(pooled=pooled, tokens=tokens, token_mask=batch["attention_mask"].bool())


class ExportOnlyOffsetEncoder(TinyConvEncoder):
    """Adds 0.01 only while being exported, so onnxruntime disagrees with PyTorch by design."""

    def forward(self, batch):
        out = super().forward(batch)
        if torch.onnx.is_in_onnx_export():
            out.pooled = out.pooled + 0.01
        return out


class LargeActivationEncoder(TinyConvEncoder):
    """Outputs in the thousands; the exported graph is off by a relative 1e-6 (float32 rounding's scale)."""

    def forward(self, batch):
        out = super().forward(batch)
        out.pooled = out.pooled * 1e5
        if torch.onnx.is_in_onnx_export():
            out.pooled = out.pooled * (1 + 1e-6)
        return out


class BranchOnValueEncoder(TinyConvEncoder):
    """Python control flow on a tensor value, which torch.export cannot capture."""

    def forward(self, batch):
        out = super().forward(batch)
        if out.pooled.sum() > 0:
            out.pooled = out.pooled * 2
        return out


class LegacyExportEncoder(TinyConvEncoder):
    """Exports itself with the TorchScript exporter through the ``export_onnx`` extension point."""

    calls: list

    def __init__(self):
        super().__init__()
        self.calls = []

    def export_onnx(self, out_path, example_inputs, opset):
        self.calls.append((Path(out_path), tuple(t.shape for t in example_inputs), opset))
        torch.onnx.export(
            self.export_module(),
            example_inputs,
            str(out_path),
            dynamo=False,
            input_names=["image"],
            output_names=["pooled"],
            dynamic_axes={"image": {0: "batch"}, "pooled": {0: "batch"}},
            opset_version=17,
        )


def _pytorch(encoder: Encoder, inputs: dict) -> np.ndarray:
    encoder.eval()
    with torch.no_grad():
        return encoder({k: torch.as_tensor(v) for k, v in inputs.items()}).pooled.numpy()


# --- shared exports (each takes a few seconds) ----------------------------------------------------


@pytest.fixture(scope="module")
def image_export(tmp_path_factory):
    torch.manual_seed(0)
    encoder = TinyConvEncoder()
    encoder.train()
    out_dir = tmp_path_factory.mktemp("image") / "export"
    report = export_encoder(
        encoder,
        TinyImageModality(),
        out_dir,
        metadata={"recipe": {"name": "tiny", "encoder": {"name": "tiny_conv"}}, "plugins": {"tiny": "1.0"}},
    )
    return encoder, report


@pytest.fixture(scope="module")
def sequence_export(tmp_path_factory):
    torch.manual_seed(0)
    encoder = TinyTokenEncoder()
    report = export_encoder(encoder, TinySequenceModality(), tmp_path_factory.mktemp("text"), name="text_encoder")
    return encoder, report


# --- successful exports ---------------------------------------------------------------------------


def test_image_export_verifies_at_untraced_batch_sizes(image_export):
    encoder, report = image_export
    assert isinstance(report, ExportReport)
    assert report.passed and report.atol == 1e-4 and report.opset == 18
    assert report.max_abs_diff <= 1e-4
    assert [c["batch_size"] for c in report.checks] == [1, 5]  # neither is the traced size 2
    assert all(c["axes"] == {"batch": c["batch_size"]} for c in report.checks)
    assert report.max_abs_diff == max(c["max_abs_diff"] for c in report.checks)
    assert report.path.name == "model.onnx" and report.path.is_file()
    assert report.data_path is not None and report.data_path.is_file()
    assert report.metadata_path == report.path.parent / "metadata.json"
    assert encoder.training, "the caller's training mode must be restored"
    assert "onnxruntime vs PyTorch on 2 fresh inputs" in report.summary()
    assert "passed" in report.summary()


def test_metadata_is_stored_in_the_onnx_file_and_beside_it(image_export):
    _, report = image_export
    props = {p.key: p.value for p in onnx.load(str(report.path), load_external_data=False).metadata_props}
    assert json.loads(props["sslhub.modality"]) == "tiny_image"
    assert json.loads(props["sslhub.metadata"])["plugins"] == {"tiny": "1.0"}
    input_spec = json.loads(props["sslhub.input_spec"])
    assert input_spec["inputs"] == {"image": {"dtype": "float32", "shape": ["batch", 3, 8, 8]}}
    assert input_spec["dynamic_axes"] == {"image": {"0": "batch"}}
    assert input_spec["preprocessing"]["mean"] == [0.5, 0.5, 0.5]

    from_file = json.loads(report.metadata_path.read_text())
    assert read_exported_metadata(report.path) == from_file == report.metadata
    assert from_file["feature_dim"] == 16
    assert from_file["output"]["shape"] == ["batch", 16]
    assert "pooled embedding" in from_file["output"]["meaning"]
    assert from_file["metadata"]["recipe"]["encoder"] == {"name": "tiny_conv"}
    assert from_file["verification"]["passed"] is True
    assert from_file["encoder"].endswith("TinyConvEncoder")
    assert "torch" in from_file["versions"] and "onnxruntime" in from_file["versions"]


def test_graph_axes_carry_the_modality_axis_names(sequence_export):
    _, report = sequence_export
    graph = onnx.load(str(report.path), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    for value in graph.input:
        assert [d.dim_param for d in value.type.tensor_type.shape.dim] == ["batch", "sequence"]
    out_dims = graph.output[0].type.tensor_type.shape.dim
    assert out_dims[0].dim_param == "batch" and out_dims[1].dim_value == 24


def test_moved_folder_still_loads_and_matches_pytorch(image_export, tmp_path):
    encoder, report = image_export
    copied = tmp_path / "copied"
    shutil.copytree(report.path.parent, copied)
    moved = Path(shutil.move(str(copied), str(tmp_path / "elsewhere" / "model_dir")))
    assert not copied.exists()
    model = onnx.load(str(moved / "model.onnx"), load_external_data=False)
    locations = [e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"]
    assert locations and all(not Path(loc).is_absolute() for loc in locations)

    images = np.random.default_rng(0).standard_normal((7, 3, 8, 8)).astype(np.float32)
    expected = _pytorch(encoder, {"image": images})
    exported = ExportedEncoder(moved)
    assert exported.feature_dim == 16
    np.testing.assert_allclose(exported.embed({"image": images}, batch_size=3), expected, atol=1e-4)
    np.testing.assert_allclose(embed_arrays(moved, {"image": images}), expected, atol=1e-4)
    np.testing.assert_allclose(run_exported(moved / "model.onnx", {"image": images[:2]}), expected[:2], atol=1e-4)
    session, metadata = load_exported(moved)
    assert session.get_inputs()[0].name == "image" and metadata["modality"] == "tiny_image"


def test_sequence_export_varies_batch_and_sequence_length(sequence_export):
    encoder, report = sequence_export
    assert report.passed and report.max_abs_diff <= 1e-4
    assert report.path.name == "text_encoder.onnx"
    assert report.metadata_path.name == "text_encoder.metadata.json"
    cases = {(c["batch_size"], c["axes"]["sequence"]) for c in report.checks}
    assert cases == {(1, 12), (5, 12), (5, 9), (1, 6)}

    # a length none of the checks used, through the deployment path
    batch = TinySequenceModality().example_batch(4)
    inputs = {k: v[:, :7].numpy() for k, v in batch.items()}
    inputs["input_ids"] = inputs["input_ids"].astype(np.int32)  # int32 ids are cast, not refused
    out = ExportedEncoder(report.path.parent).run(inputs)
    np.testing.assert_allclose(out, _pytorch(encoder, {k: v.astype(np.int64) for k, v in inputs.items()}), atol=1e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter is deprecated, still fine here
def test_export_onnx_method_replaces_torch_onnx_export(tmp_path):
    torch.manual_seed(0)
    encoder = LegacyExportEncoder()
    report = export_encoder(encoder, TinyImageModality(), tmp_path, opset=17)
    assert encoder.calls == [(tmp_path / "model.onnx", (torch.Size([2, 3, 8, 8]),), 17)]
    assert report.passed and report.max_abs_diff <= 1e-4
    assert read_exported_metadata(report.path)["modality"] == "tiny_image"


# --- failures -------------------------------------------------------------------------------------


def test_mismatch_raises_a_readable_error(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(ExportError) as info:
        export_encoder(ExportOnlyOffsetEncoder(), TinyImageModality(), tmp_path, atol=1e-4)
    message = str(info.value)
    assert "The ONNX model of ExportOnlyOffsetEncoder does not match PyTorch: max abs diff" in message
    assert "exceeds the tolerance" in message and "= atol 0.0001 + rtol 0.0001 x" in message
    assert "relative" in message and "allow_mismatch=True" in message
    assert "FAILED" in info.value.details


def test_allow_mismatch_returns_a_failed_report(tmp_path):
    torch.manual_seed(0)
    report = export_encoder(ExportOnlyOffsetEncoder(), TinyImageModality(), tmp_path, allow_mismatch=True)
    assert not report.passed
    assert 1e-3 < report.max_abs_diff < 1.0  # the 0.01 offset through the linear head
    assert "FAILED" in report.summary()
    assert json.loads(report.metadata_path.read_text())["verification"]["passed"] is False


def test_exporter_failure_names_the_encoder_and_keeps_the_cause(tmp_path):
    with pytest.raises(ExportError) as info:
        export_encoder(BranchOnValueEncoder(), TinyImageModality(), tmp_path)
    message = str(info.value)
    assert message.startswith("ONNX export of BranchOnValueEncoder failed in torch.onnx.export:")
    assert "Run with --debug for the full trace." in message
    assert "if out.pooled.sum() > 0" in message  # the user's line, found in the exporter's report
    assert len(message.splitlines()) <= 8
    assert info.value.__cause__ is not None
    assert "Traceback" in info.value.details


def test_missing_onnx_packages_give_an_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # makes `import onnxscript` raise ImportError
    with pytest.raises(
        ExportError,
        match=r"needs onnxscript, which is not installed\. Install with: pip install onnx onnxscript onnxruntime",
    ):
        export_encoder(TinyConvEncoder(), TinyImageModality(), tmp_path)
    assert not (tmp_path / "model.onnx").exists()


def test_wrong_feature_dim_fails_before_exporting(tmp_path):
    encoder = TinyConvEncoder(feature_dim=32)
    with pytest.raises(ExportError, match="returned 16 features per sample, but TinyConvEncoder.feature_dim is 32"):
        export_encoder(encoder, TinyImageModality(), tmp_path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="atol and rtol must be >= 0"):
        export_encoder(TinyConvEncoder(), TinyImageModality(), Path("unused"), atol=-1)
    with pytest.raises(ValueError, match="atol and rtol must be >= 0"):
        export_encoder(TinyConvEncoder(), TinyImageModality(), Path("unused"), rtol=-1)
    encoder = TinyConvEncoder()
    encoder.input_names = ()
    with pytest.raises(ValueError, match="input_names is empty"):
        export_encoder(encoder, TinyImageModality(), Path("unused"))


# --- helpers ---------------------------------------------------------------------------------------


def test_compare_outputs():
    expected = np.array([[1.0, -2.0], [0.5, 0.0]], dtype=np.float32)
    actual = expected + np.array([[0.0, 0.1], [0.0, 0.0]], dtype=np.float32)
    abs_diff, rel_diff = compare_outputs(actual, expected)
    assert abs_diff == pytest.approx(0.1, rel=1e-5) and rel_diff == pytest.approx(0.05, rel=1e-5)
    assert compare_outputs(expected[:1], expected) == (math.inf, math.inf)
    with_nan = expected.copy()
    with_nan[1, 1] = np.nan
    assert compare_outputs(with_nan, with_nan) == (0.0, 0.0)
    assert compare_outputs(with_nan, expected) == (math.inf, math.inf)


def test_verification_cases_avoid_the_traced_shape():
    axes = {"ids": {0: "batch", 1: "sequence"}, "mask": {0: "batch", 1: "sequence"}}
    example = {"ids": torch.zeros(2, 16), "mask": torch.zeros(2, 16)}
    assert verification_cases(axes, example) == [(1, {}), (5, {}), (5, {"sequence": 12}), (1, {"sequence": 8})]
    assert verification_cases({"x": {0: "batch"}}, {"x": torch.zeros(2, 3)}) == [(1, {}), (5, {})]
    # a length-1 axis cannot be shortened: only batch sizes vary
    assert verification_cases(axes, {"ids": torch.zeros(2, 1), "mask": torch.zeros(2, 1)}) == [(1, {}), (5, {})]

    shortened = shorten_inputs(
        {"ids": torch.arange(10).reshape(2, 5), "other": torch.ones(2, 5)}, {"ids": axes["ids"]}, {"sequence": 3}
    )
    assert shortened["ids"].tolist() == [[0, 1, 2], [5, 6, 7]] and shortened["other"].shape == (2, 5)


def test_encoder_elsewhere_is_copied_not_changed():
    encoder = TinyConvEncoder().to(torch.bfloat16)
    copy, restore = cpu_float32_eval(encoder)
    restore()
    assert copy is not encoder and next(copy.parameters()).dtype == torch.float32 and not copy.training
    assert next(encoder.parameters()).dtype == torch.bfloat16 and encoder.training


def test_exported_encoder_rejects_bad_inputs(sequence_export):
    _, report = sequence_export
    model = ExportedEncoder(report.path.parent, name="text_encoder")
    with pytest.raises(
        ValueError, match=r"missing inputs \['attention_mask'\]: the model takes input_ids \(int64, rank 2\)"
    ):
        model.run({"input_ids": np.ones((2, 4), dtype=np.int64)})
    with pytest.raises(ValueError, match="input 'input_ids' is float32, the model takes int64"):
        model.run({"input_ids": np.ones((2, 4), np.float32), "attention_mask": np.ones((2, 4), np.int64)})
    with pytest.raises(ValueError, match="disagree on the batch size"):
        model.run({"input_ids": np.ones((2, 4), np.int64), "attention_mask": np.ones((3, 4), np.int64)})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ExportedEncoder(report.path.parent / "nowhere")


def test_dynamic_shapes_follow_the_forward_signature():
    class Named(nn.Module):
        def forward(self, input_ids, attention_mask):  # pragma: no cover - never called
            return input_ids

    class VarArgs(nn.Module):
        def forward(self, *inputs):  # pragma: no cover - never called
            return inputs[0]

    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    named = torch_export_dynamic_shapes(Named(), axes)
    assert len(named) == 2 and set(named[0]) == {0, 1}
    assert named[0][0] is named[1][0] and named[0][1] is named[1][1]  # same axis name, same Dim
    (varargs,) = torch_export_dynamic_shapes(VarArgs(), axes)
    assert len(varargs) == 2 and varargs[0][1] is varargs[1][1]
    with pytest.raises(ExportError, match="takes fewer positional inputs than the 2 input_names"):
        torch_export_dynamic_shapes(nn.Identity(), axes)


# --- tolerance relative to the output's magnitude ----------------------------------------------------


def test_large_activations_pass_within_the_relative_tolerance(tmp_path):
    torch.manual_seed(0)
    report = export_encoder(LargeActivationEncoder(), TinyImageModality(), tmp_path)
    assert report.passed and report.atol == 1e-4 and report.rtol == 1e-4
    assert report.max_abs_diff > 5 * report.atol  # an absolute tolerance alone would reject it
    assert report.max_rel_diff < 1e-5
    for check in report.checks:
        assert check["reference_max_abs"] > 1e3 and check["passed"]
        assert check["tolerance"] == pytest.approx(1e-4 + 1e-4 * check["reference_max_abs"])
    verification = json.loads(report.metadata_path.read_text())["verification"]
    assert (verification["atol"], verification["rtol"], verification["passed"]) == (1e-4, 1e-4, True)
    assert verification["max_abs_diff"] == report.max_abs_diff and verification["max_rel_diff"] == report.max_rel_diff
    assert verification["rule"].startswith("max_abs_diff <= atol + rtol * reference_max_abs")
    summary = report.summary()
    assert f"max abs diff {report.max_abs_diff:.2e}, max rel diff {report.max_rel_diff:.2e}" in summary
    assert "tolerance atol 1e-04 + rtol 1e-04 x max|output|): passed" in summary


def test_the_same_export_fails_without_the_relative_part(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(ExportError, match=r"exceeds the tolerance 0\.0001 = atol 0\.0001 \+ rtol 0 x"):
        export_encoder(LargeActivationEncoder(), TinyImageModality(), tmp_path, rtol=0)


def test_a_wrong_export_of_large_activations_still_fails(monkeypatch, tmp_path):
    """onnxruntime's outputs 1% off (a broken graph, not rounding) fail however large they are."""
    import sslhub.embed

    real_session = sslhub.embed.make_session

    class OnePercentOff:
        def __init__(self, path):
            self.session = real_session(path)

        def get_outputs(self):
            return self.session.get_outputs()

        def run(self, names, feeds):
            return [np.asarray(out) * 1.01 for out in self.session.run(names, feeds)]

    monkeypatch.setattr(sslhub.embed, "make_session", OnePercentOff)
    torch.manual_seed(0)
    report = export_encoder(LargeActivationEncoder(), TinyImageModality(), tmp_path, allow_mismatch=True)
    assert not report.passed and report.max_rel_diff == pytest.approx(0.01, rel=1e-3)
    assert not any(check["passed"] for check in report.checks)
    with pytest.raises(ExportError, match="does not match PyTorch"):
        export_encoder(LargeActivationEncoder(), TinyImageModality(), tmp_path)


# --- opsets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [99, 17])
def test_an_opset_the_exporter_does_not_write_is_refused_before_exporting(opset, tmp_path):
    with pytest.raises(ExportError) as info:
        export_encoder(TinyConvEncoder(), TinyImageModality(), tmp_path, opset=opset)
    assert str(info.value).endswith(
        f"opset {opset} is outside what torch.onnx's exporter writes here (18 to 25): pick one in that range "
        "(18 is its native opset)"
    )
    assert "Traceback" not in str(info.value) and not (tmp_path / "model.onnx").exists()


def test_the_opset_written_is_the_one_recorded(tmp_path):
    torch.manual_seed(0)
    report = export_encoder(TinyConvEncoder(), TinyImageModality(), tmp_path, opset=20)
    declared = [o.version for o in onnx.load(str(report.path), load_external_data=False).opset_import if o.domain == ""]
    metadata = json.loads(report.metadata_path.read_text())
    assert declared == [20] and report.opset == 20 and (metadata["opset"], metadata["requested_opset"]) == (20, 20)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter is deprecated, still fine here
def test_a_custom_exporter_ignoring_the_opset_is_recorded_as_written(tmp_path):
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="opset 19 was asked for, but export_onnx wrote opset 17") as caught:
        report = export_encoder(LegacyExportEncoder(), TinyImageModality(), tmp_path, opset=19)
    # the warning points at the line that asked for the opset, not into sslhub
    assert [w.filename for w in caught if "was asked for" in str(w.message)] == [__file__]
    metadata = json.loads(report.metadata_path.read_text())
    assert (report.opset, report.requested_opset) == (17, 19)
    assert (metadata["opset"], metadata["requested_opset"]) == (17, 19)
    assert "opset 17 (asked for 19)" in report.summary()


# Every public name of sslhub.export before its steps moved into modules of their own (export_module,
# onnx_trace, export_verify, export_metadata, export_error): third-party code imports them from here.
NAMES_BEFORE_THE_SPLIT = (
    "METADATA_PREFIX METADATA_FORMAT METADATA_FORMAT_VERSION OUTPUT_NAME INSTALL_HINT TRACE_BATCH_SIZE "
    "VERIFY_BATCH_SIZES VERIFY_LENGTH_FRACTIONS MIN_ONNX_OPSET MAX_ONNX_OPSET DEFAULT_ATOL DEFAULT_RTOL "
    "TOLERANCE_RULE ExportError ExportReport export_encoder check_opset read_opset exporter_output_to "
    "verification_document judge_checks output_differences compare_outputs RunExportSetup export_run "
    "select_export_head export_classifier"
).split()


def test_the_public_names_of_sslhub_export_are_still_there():
    import sslhub.export

    missing = [name for name in NAMES_BEFORE_THE_SPLIT if not hasattr(sslhub.export, name)]
    assert not missing, f"no longer importable from sslhub.export: {missing}"
