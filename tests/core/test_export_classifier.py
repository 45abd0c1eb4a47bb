"""export_classifier: two verified outputs at untraced batch and sequence sizes, and loud failures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from sslhub import Encoder, EncoderOutput, Modality
from sslhub.embed import ExportedEncoder
from sslhub.export import ExportError, export_classifier

CLASSES = ["negative", "neutral", "positive"]


class TokensModality(Modality):
    """Token ids ``[B, T]`` with a padding mask; batch and sequence axes vary."""

    name = "tokens"
    input_names = ("input_ids", "attention_mask")

    def train_dataset(self):  # pragma: no cover - not used by export
        raise NotImplementedError

    def example_batch(self, batch_size, device="cpu"):
        ids = torch.randint(1, 40, (batch_size, 10))
        mask = (torch.arange(10) < torch.randint(6, 11, (batch_size, 1))).long()
        return {"input_ids": ids * mask, "attention_mask": mask}

    def input_spec(self):
        axes = {0: "batch", 1: "sequence"}
        return {"dynamic_axes": {"input_ids": axes, "attention_mask": axes}, "preprocessing": {"pad_token_id": 0}}


class MeanTokens(Encoder):
    """Embedding and mean over real tokens: ``[B, T] -> [B, 12]``."""

    input_names = ("input_ids", "attention_mask")
    feature_dim = 12

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(40, 12)

    def forward(self, batch):
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (self.embed(batch["input_ids"]) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return EncoderOutput(pooled=pooled)


class ExportOnlyBias(nn.Linear):
    """A linear head that favours the last class only while being exported: ONNX disagrees by design."""

    def forward(self, pooled):
        logits = super().forward(pooled)
        if torch.onnx.is_in_onnx_export():
            logits = logits + torch.tensor([0.0, 0.0, 1.0])
        return logits


def _parts(head_class: type[nn.Linear] = nn.Linear) -> tuple[Encoder, nn.Module]:
    torch.manual_seed(0)
    return MeanTokens().train(), head_class(12, len(CLASSES))


def test_both_outputs_match_pytorch_at_untraced_batch_and_sequence_sizes(tmp_path):
    encoder, head = _parts()
    report = export_classifier(encoder, head, TokensModality(), CLASSES, tmp_path)

    assert report["passed"] and report["opset"] == 18
    assert {c["batch_size"] for c in report["checks"]} >= {1, 5}
    assert any(c["axes"]["sequence"] < 10 for c in report["checks"])
    assert all(set(c["outputs"]) == {"logits", "probabilities"} for c in report["checks"])
    assert encoder.training, "the caller's encoder keeps its mode"

    ids = torch.tensor([[5, 7, 9, 0], [3, 0, 0, 0], [1, 2, 3, 4]])
    mask = (ids > 0).long()
    probabilities = ExportedEncoder(tmp_path, name="classifier", output="probabilities").run(
        {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    )
    with torch.no_grad():
        expected = torch.softmax(head(encoder.eval()({"input_ids": ids, "attention_mask": mask}).pooled), -1)
    np.testing.assert_allclose(probabilities, expected.numpy(), atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-6)


def test_metadata_is_the_encoder_documents_plus_the_classes(tmp_path):
    encoder, head = _parts()
    export_classifier(encoder, head, TokensModality(), CLASSES, tmp_path, name="sentiment")
    metadata = json.loads((tmp_path / "sentiment.metadata.json").read_text())
    assert metadata["task"] == "classification" and metadata["class_names"] == CLASSES
    assert metadata["model_name"] == "sentiment" and metadata["modality"] == "tokens"
    assert metadata["input_spec"]["preprocessing"] == {"pad_token_id": 0}
    assert metadata["output"]["name"] == "logits" and metadata["feature_dim"] == 3
    assert [o["shape"] for o in metadata["outputs"]] == [["batch", 3], ["batch", 3]]
    assert metadata["verification"]["passed"] is True


def test_an_export_that_disagrees_with_pytorch_fails_loudly(tmp_path):
    encoder, head = _parts(ExportOnlyBias)
    with pytest.raises(ExportError) as info:
        export_classifier(encoder, head, TokensModality(), CLASSES, tmp_path)
    message = str(info.value)
    assert "The ONNX model of MeanTokens does not match PyTorch" in message
    assert "output 'logits'" in message and "exceeds the tolerance" in message


def test_wrong_probabilities_alone_fail_the_verification(monkeypatch, tmp_path):
    """Every output is compared, not only the first: onnxruntime's probabilities 1% off fail."""
    import sslhub.embed

    real_session = sslhub.embed.make_session

    class ProbabilitiesOff:
        def __init__(self, path):
            self.session = real_session(path)

        def get_outputs(self):
            return self.session.get_outputs()

        def run(self, names, feeds):
            outputs = self.session.run(names, feeds)
            return [out * 1.01 if name == "probabilities" else out for name, out in zip(names, outputs, strict=True)]

    monkeypatch.setattr(sslhub.embed, "make_session", ProbabilitiesOff)
    encoder, head = _parts()
    with pytest.raises(ExportError, match=r"does not match PyTorch: .* output 'probabilities'\)"):
        export_classifier(encoder, head, TokensModality(), CLASSES, tmp_path)


def test_head_width_and_class_names_must_agree(tmp_path):
    encoder, _ = _parts()
    with pytest.raises(ExportError, match="maps the pooled features to 4 logits, but 3 class_names"):
        export_classifier(encoder, nn.Linear(12, 4), TokensModality(), CLASSES, tmp_path)
    with pytest.raises(ValueError, match=r"class_names repeats \['a'\]"):
        export_classifier(encoder, nn.Linear(12, 3), TokensModality(), ["a", "b", "a"], tmp_path)
    with pytest.raises(ValueError, match="class_names is empty"):
        export_classifier(encoder, nn.Linear(12, 3), TokensModality(), [], tmp_path)
