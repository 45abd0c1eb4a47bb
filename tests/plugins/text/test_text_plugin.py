"""The text plugin registers its components through the sslhub entry point."""

from __future__ import annotations

from sslhub import Catalog


def test_text_plugin_registers_its_components(monkeypatch):
    monkeypatch.setenv("SSLHUB_DISABLE_PLUGINS", "vision,audio")
    catalog = Catalog.load()
    assert not [p for p in catalog.problems() if "text" in p]
    assert "text" in catalog.modalities
    assert catalog.encoders.get("hf").provides == {"pooled", "tokens", "token_embeddings"}
    mlm = catalog.objectives.get("mlm")
    assert mlm.requires == {"tokens", "token_embeddings"} and mlm.modalities == {"text"}
    assert catalog.objectives.get("split_contrastive").requires == {"pooled"}
    for name in ("token_dropout", "span_deletion", "random_token_replacement"):
        assert catalog.augmentations.get(name).modalities == {"text"}
