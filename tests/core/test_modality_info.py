"""ModalityInfo: typed facts a modality gives its components, recorded with the keys it set."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sslhub import ModalityInfo


def test_only_the_fields_a_modality_set_are_recorded_then_extra():
    info = ModalityInfo(vocab_size=100, mask_token_id=None, special_token_ids=[0, 1], extra={"frames": 7})
    assert info.as_dict() == {"vocab_size": 100, "mask_token_id": None, "special_token_ids": [0, 1], "frames": 7}
    assert info.channels is None and info.mask_token_id is None


def test_a_record_reads_back_with_unknown_keys_as_extra():
    record = {"n_mels": 64, "sample_rate": 16000, "frames": 101, "num_samples": 16000}
    info = ModalityInfo.from_dict(record)
    assert info.n_mels == 64 and info.extra == {"frames": 101, "num_samples": 16000}
    assert info.as_dict() == record


def test_merged_keeps_both_parts_and_the_later_one_wins():
    image = ModalityInfo(channels=3, image_size=16, value_range=[0.0, 1.0])
    text = ModalityInfo(vocab_size=50, max_length=24, extra={"source": "captions"})
    merged = image.merged(text).merged(ModalityInfo(parts=["image", "text"]))
    assert (merged.channels, merged.vocab_size, merged.parts) == (3, 50, ["image", "text"])
    assert merged.extra == {"source": "captions"}
    assert image.merged(ModalityInfo(image_size=8)).image_size == 8


def test_needed_names_the_reader_and_the_missing_field():
    info = ModalityInfo(dim=4)
    assert info.needed("dim", "encoder 'mlp'") == 4
    with pytest.raises(ValueError, match=r"encoder 'hf' needs the modality's vocab_size \(ModalityInfo.vocab_size\)"):
        info.needed("vocab_size", "encoder 'hf'")


def test_fields_are_typed_and_unknown_ones_refused():
    with pytest.raises(ValidationError):
        ModalityInfo(vocab_size="many")
    with pytest.raises(ValidationError):
        ModalityInfo(vocab=10)


def test_a_modality_whose_info_is_still_a_dict_is_named_at_build():
    from sslhub import Modality
    from sslhub.building import _check_modality_info
    from sslhub.errors import ComponentContractError

    class OldStyle(Modality):
        def train_dataset(self):
            return []

        def example_batch(self, batch_size, device="cpu"):
            return {}

        def info(self):
            return {"dim": 3}

    with pytest.raises(
        ComponentContractError, match=r"modality 'vectors' \(.*OldStyle.*\) broke the Modality contract"
    ):
        _check_modality_info(OldStyle(), "vectors")
