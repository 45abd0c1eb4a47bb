"""mlm's whole-word masking needs a modality that declares ``word_continuations``; validation says so
before anything is built."""

from __future__ import annotations

import re
import textwrap

from toy_runs import sslhub

PLUGIN = textwrap.dedent(
    """
    from sslhub import Modality, hookimpl


    class Captions(Modality):
        def train_dataset(self):
            raise NotImplementedError

        def example_batch(self, batch_size, device="cpu"):
            raise NotImplementedError


    @hookimpl
    def sslhub_register_modalities(registry):
        # a composite whose only part is text, but which declares no word_continuations of its own
        registry.register("captions", Captions, modalities=["text"])
    """
)


def recipe(whole_word_masking: bool) -> str:
    return textwrap.dedent(
        f"""
        name: captions-mlm
        data: {{modality: captions}}
        encoder: {{name: hf, hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64}}
        objectives:
          - {{name: mlm, whole_word_masking: {str(whole_word_masking).lower()}}}
        train: {{steps: 2, batch_size: 4}}
        """
    )


def test_whole_word_masking_needs_a_modality_with_word_continuations(tmp_path):
    plugin = tmp_path / "captions_plugin.py"
    plugin.write_text(PLUGIN)
    for whole_word in (False, True):
        (tmp_path / f"r{whole_word}.yaml").write_text(recipe(whole_word))
    plain = sslhub("validate", str(tmp_path / "rFalse.yaml"), "-p", str(plugin))
    assert plain.returncode == 0, plain.stderr
    result = sslhub("validate", str(tmp_path / "rTrue.yaml"), "-p", str(plugin))
    assert result.returncode != 0
    assert re.search(
        r"rTrue\.yaml:6: objectives\[0\]: objective 'mlm' with these settings needs a modality that knows",
        result.stderr,
    )
    assert "modality 'captions' does not declare provides=['word_continuations']" in result.stderr
    assert "Traceback" not in result.stderr


def test_text_and_image_text_declare_word_continuations():
    from sslhub.testing import catalog_with

    catalog = catalog_with("sslhub_vision.plugin", "sslhub_text.plugin", "sslhub_multimodal.plugin")
    for name in ("text", "image_text"):
        assert "word_continuations" in catalog.registry("modality").get(name).provides
