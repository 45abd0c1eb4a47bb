"""The image_text modality: caption templates, pairs from every source, collate, info, spec."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
import torch
from PIL import Image

from sslhub import SSLHubError
from sslhub.testing import catalog_with
from sslhub_multimodal.captions import (
    DIGIT_WORDS,
    EVAL_TEMPLATES,
    TRAIN_TEMPLATES,
    digit_captions,
    fill_template,
)
from sslhub_multimodal.modality import FolderPairSource, ImageTextModality, ImageTextParams, JsonlPairSource


def mentions_digit(caption: str, label: int) -> bool:
    words = re.findall(r"\w+", caption)
    return DIGIT_WORDS[label] in words or str(label) in words


# ------------------------------------------------------------------------------ captions
def test_fill_template_slots_and_errors():
    assert fill_template("an {parity} digit: {digit}", 7) == "an odd digit: 7"
    assert fill_template("a handwritten digit {word}", 0) == "a handwritten digit zero"
    with pytest.raises(ValueError, match="digit label must be in 0..9, got 10"):
        fill_template("{word}", 10)
    with pytest.raises(ValueError, match="unknown slot 'colour'"):
        fill_template("a {colour} digit", 3)


def test_evaluation_templates_are_held_out():
    assert not set(TRAIN_TEMPLATES) & set(EVAL_TEMPLATES)
    assert len(TRAIN_TEMPLATES) >= 5 and len(EVAL_TEMPLATES) >= 2


def test_digit_captions_use_every_template_evenly_per_class():
    labels = np.repeat(np.arange(10), 16)
    captions = digit_captions(labels, TRAIN_TEMPLATES, seed=3)
    assert captions == digit_captions(labels, TRAIN_TEMPLATES, seed=3)  # deterministic
    assert captions != digit_captions(labels, TRAIN_TEMPLATES, seed=4)
    for label in range(10):
        own = [c for c, y in zip(captions, labels, strict=True) if y == label]
        assert all(mentions_digit(c, label) for c in own)
        counts = [sum(c == fill_template(t, label) for c in own) for t in TRAIN_TEMPLATES]
        assert max(counts) - min(counts) <= 1 and sum(counts) == 16  # evenly spread


# ------------------------------------------------------------------------------ default pairs
def test_default_pairs_are_honest_and_split_by_template(digit_pairs):
    split = digit_pairs.eval_split()
    assert split is not None and split.class_names == DIGIT_WORDS
    assert len(split.train) + len(split.test) == 1797
    assert len(split.train) == len(digit_pairs.train_dataset())
    train_captions, test_captions = digit_pairs.captions("train"), digit_pairs.captions("test")
    train_phrasings = {fill_template(t, y) for t in TRAIN_TEMPLATES for y in range(10)}
    eval_phrasings = {fill_template(t, y) for t in EVAL_TEMPLATES for y in range(10)}
    assert set(train_captions) <= train_phrasings and set(test_captions) <= eval_phrasings
    decode = digit_pairs.parts["text"].tokenizer.decode
    for dataset, captions in ((split.train, train_captions), (split.test, test_captions)):
        for index in (0, 7, len(dataset) - 1):
            sample = dataset[index]
            label = int(sample["label"])
            assert mentions_digit(captions[index], label)
            assert decode(sample["input_ids"].tolist()) == captions[index]
            assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 16, 16)


def test_images_are_the_digits_of_their_label(digit_pairs):
    """The image of a pair is the digit its label (and caption) names: nearest class mean of the
    scikit-learn digits, computed independently of the modality, agrees on most test pairs."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    split = digit_pairs.eval_split()
    means = torch.stack([torch.from_numpy(digits.images[digits.target == c]).float().mean(0) for c in range(10)])
    agree = 0
    for index in range(0, len(split.test), 6):
        sample = split.test[index]
        small = torch.nn.functional.adaptive_avg_pool2d(sample["image"][:1].float()[None], 8)[0, 0] * 16 / 255
        agree += int(((means - small) ** 2).sum((1, 2)).argmin()) == int(sample["label"])
    assert agree / len(range(0, len(split.test), 6)) > 0.8


def test_samples_collate_and_example_batch(digit_pairs):
    dataset = digit_pairs.train_dataset()
    samples = [dataset[i] for i in range(6)]
    assert set(samples[0]) == {"image", "input_ids", "attention_mask"}
    batch = digit_pairs.collate(samples)
    longest = max(len(s["input_ids"]) for s in samples)
    assert batch["image"].shape == (6, 3, 16, 16) and batch["image"].dtype == torch.uint8
    assert batch["input_ids"].shape == (6, longest) and batch["attention_mask"].shape == (6, longest)
    for row, sample in enumerate(samples):
        n = len(sample["input_ids"])
        assert torch.equal(batch["input_ids"][row, :n], sample["input_ids"])
        assert (batch["input_ids"][row, n:] == digit_pairs.info().pad_token_id).all()
        assert batch["attention_mask"][row].sum() == n
    on_device = digit_pairs.on_device(batch)
    assert on_device["image"].dtype == torch.float32 and float(on_device["image"].max()) <= 1.0
    assert torch.equal(on_device["input_ids"], batch["input_ids"])
    example = digit_pairs.example_batch(3)
    assert example["image"].shape == (3, 3, 16, 16) and example["input_ids"].shape == (3, 24)
    special = set(digit_pairs.info().special_token_ids)
    assert not any(int(t) in special for t in example["input_ids"][:, 1:-1].flatten())


def test_info_and_input_spec_cover_both_parts(digit_pairs):
    info = digit_pairs.info()
    for key in (
        "channels",
        "image_size",
        "mean",
        "std",
        "vocab_size",
        "pad_token_id",
        "mask_token_id",
        "special_token_ids",
        "max_length",
    ):
        assert key in info.as_dict(), key
    assert info.parts == ["image", "text"]
    assert info.image_size == 16 and info.max_length == 24 and info.vocab_size > 50
    spec = digit_pairs.input_spec()
    assert set(spec["inputs"]) == {"image", "input_ids", "attention_mask"}
    assert spec["dynamic_axes"]["input_ids"] == {0: "batch", 1: "sequence"}
    assert spec["dynamic_axes"]["image"] == {0: "batch"}
    assert spec["preprocessing"]["image"]["normalization"] == "inside_model"
    assert spec["preprocessing"]["text"]["pad_token_id"] == info.pad_token_id


def test_tokenizer_is_saved_in_the_run_dir_and_reused(tmp_path):
    modality = ImageTextModality(ImageTextParams(image_size=8, max_length=16))
    modality.prepare(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    again = ImageTextModality(ImageTextParams(image_size=8, max_length=16))
    again.prepare(tmp_path)
    assert again.parts["text"].tokenizer.get_vocab() == modality.parts["text"].tokenizer.get_vocab()
    prompts = again.tokenize(["a handwritten digit seven", "7"])
    assert prompts["input_ids"].shape[0] == 2 and prompts["attention_mask"][1].sum() == 3  # [CLS] 7 [SEP]


# ------------------------------------------------------------------------------ folder and jsonl
def write_image(path, value: int) -> None:
    Image.fromarray(np.full((12, 10, 3), value, dtype=np.uint8)).save(path)


def test_folder_pairs_with_classes_and_a_missing_caption(tmp_path, caplog):
    for cls, value in (("cats", 40), ("dogs", 200)):
        (tmp_path / cls).mkdir()
        for i in range(5):
            write_image(tmp_path / cls / f"{i}.png", value)
            if not (cls == "dogs" and i == 4):
                (tmp_path / cls / f"{i}.txt").write_text(f"a {cls[:-1]} number {i}\n")
    params = ImageTextParams(source=FolderPairSource(path=tmp_path), image_size=8, eval_fraction=0.2)
    modality = ImageTextModality(params)
    with caplog.at_level(logging.WARNING, logger="sslhub"):
        modality.prepare(None)
    assert "skipped 1 image(s)" in caplog.text and "dogs/4.png" in caplog.text
    split = modality.eval_split()
    assert split.class_names == ("cats", "dogs")
    assert len(split.train) + len(split.test) == 9
    for dataset in (split.train, split.test):
        for index in range(len(dataset)):
            sample = dataset[index]
            caption = modality.parts["text"].tokenizer.decode(sample["input_ids"].tolist())
            # the caption belongs to the image beside it: cats are dark, dogs bright
            assert ("cat" in caption) == (int(sample["image"].float().mean()) < 128)
            assert ("cat" in caption) == (int(sample["label"]) == 0)


def test_jsonl_pairs_skip_bad_lines(tmp_path, caplog):
    (tmp_path / "img").mkdir()
    lines = []
    for i in range(6):
        write_image(tmp_path / "img" / f"{i}.png", 30 * i)
        lines.append(
            json.dumps({"image": f"img/{i}.png", "caption": f"gray level {i}", "kind": "even" if i % 2 == 0 else "odd"})
        )
    lines += ["not json", json.dumps({"image": "img/missing.png", "caption": "gone"}), json.dumps({"caption": "x"})]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    params = ImageTextParams(
        source=JsonlPairSource(path=tmp_path / "pairs.jsonl", label_field="kind"), image_size=8, eval_fraction=0.34
    )
    modality = ImageTextModality(params)
    with caplog.at_level(logging.WARNING, logger="sslhub"):
        modality.prepare(None)
    assert "skipped 3 line(s)" in caplog.text
    split = modality.eval_split()
    assert split.class_names == ("even", "odd") and len(split.train) + len(split.test) == 6
    assert len(modality.held_out_dataset()) == len(split.test) == 2
    for index in range(len(split.train)):
        sample = split.train[index]
        level = int(modality.parts["text"].tokenizer.decode(sample["input_ids"].tolist()).split()[-1])
        assert int(sample["image"][0, 0, 0]) == 30 * level and int(sample["label"]) == level % 2


def test_unlabeled_jsonl_has_no_eval_split(tmp_path):
    write_image(tmp_path / "a.png", 10)
    write_image(tmp_path / "b.png", 20)
    (tmp_path / "p.jsonl").write_text(
        '{"image": "a.png", "caption": "dark"}\n{"image": "b.png", "caption": "less dark"}\n'
    )
    modality = ImageTextModality(
        ImageTextParams(source=JsonlPairSource(path=tmp_path / "p.jsonl"), image_size=8, eval_fraction=0.5)
    )
    assert modality.eval_split() is None
    assert len(modality.held_out_dataset()) == 1 and len(modality.train_dataset()) == 1


def test_bad_parameters_fail_clearly(tmp_path):
    # the image part checks its own constants (recipe validation reports it at data.mean)
    with pytest.raises(SSLHubError, match="image part are invalid: mean must have 1 or channels=3 values, got 2"):
        ImageTextModality(ImageTextParams(mean=(0.5, 0.5)))
    with pytest.raises(ValueError, match="does not exist"):
        ImageTextModality(ImageTextParams(source=JsonlPairSource(path=tmp_path / "none.jsonl"))).prepare(None)
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match="no readable images"):
        ImageTextModality(ImageTextParams(source=FolderPairSource(path=tmp_path))).prepare(None)


def test_image_and_text_components_accept_the_modality():
    catalog = catalog_with("sslhub_vision.plugin", "sslhub_text.plugin", "sslhub_multimodal.plugin")
    modality = catalog.registry("modality").get("image_text")
    assert modality.modalities == {"image", "text"}
    clip = catalog.registry("objective").get("clip")
    assert clip.encoder_slots == {"image", "text"} and clip.modalities == {"image_text"}


def test_raw_features_give_each_side_its_own_baseline_by_encoder_key(digit_pairs):
    from sslhub.testing import check_raw_features

    batch = digit_pairs.on_device(digit_pairs.example_batch(3))
    raw = digit_pairs.raw_features(batch)
    assert set(raw) == {"image", "text"}
    assert raw["image"].shape == (3, 3 * 16 * 16)
    assert raw["text"].shape == (3, digit_pairs.info().vocab_size)
    scores = check_raw_features(digit_pairs)
    assert set(scores) == {"image/", "text/"}
    assert scores["image/"] > 0.5 and scores["text/"] > 0.5  # ten digit classes


def write_grouped_pairs(root, shades: dict[str, int]) -> None:
    """``root/<class>/<name>__<n>.png`` + caption; class ``dark`` or ``bright`` from the shade."""
    for name, shade in shades.items():
        cls = "dark" if shade < 128 else "bright"
        (root / cls).mkdir(parents=True, exist_ok=True)
        for n in range(2):
            write_image(root / cls / f"{name}__{n}.png", shade)
            (root / cls / f"{name}__{n}.txt").write_text(f"the {name} icon\n")


GROUP_PATTERN = r"^[^/]+/(?P<group>[^/]+)__\d+\.[a-z0-9]+$"


def test_labeled_split_of_another_folder_keeps_groups_apart_and_uses_the_run_tokenizer(tmp_path):
    write_grouped_pairs(tmp_path / "train", {"alpha": 10, "beta": 220})
    shades = {f"n{i}": (20 + 10 * i if i % 2 else 150 + 10 * i) for i in range(8)}
    write_grouped_pairs(tmp_path / "labeled", shades)
    modality = ImageTextModality(ImageTextParams(source=FolderPairSource(path=tmp_path / "train"), image_size=8))
    modality.prepare(None)
    source = FolderPairSource(path=tmp_path / "labeled", group_pattern=GROUP_PATTERN)
    split = modality.labeled_split(source, test_fraction=0.3, seed=0)
    assert split.class_names == ("bright", "dark") and split.source == str(tmp_path / "labeled")
    assert len(split.train) + len(split.test) == 16 and split.groups["train"] + split.groups["test"] == 8

    def names(dataset) -> set[str]:
        return {re.sub(r"__\d+\.png$", "", name.rsplit("/", 1)[-1]) for name in dataset.names}

    assert not names(split.train) & names(split.test)
    for dataset in (split.train, split.test):
        for index in range(len(dataset)):
            sample = dataset[index]
            assert (int(sample["image"].float().mean()) < 128) == (int(sample["label"]) == 1)
            # the caption beside the image, tokenized by the run's tokenizer (trained on train/ only)
            name = re.sub(r"__\d+\.png$", "", dataset.names[index].rsplit("/", 1)[-1])
            expected = modality.tokenize([f"the {name} icon"])["input_ids"][0]
            assert sample["input_ids"].tolist() == expected.tolist()
    with pytest.raises(ValueError, match="not the default digits"):
        ImageTextModality(ImageTextParams(image_size=8)).labeled_split(
            ImageTextParams().source, test_fraction=0.3, seed=0
        )


def test_a_folder_group_pattern_groups_the_own_split_too(tmp_path):
    write_grouped_pairs(tmp_path, {f"n{i}": (20 * i if i % 2 else 140 + 10 * i) for i in range(10)})
    params = ImageTextParams(
        source=FolderPairSource(path=tmp_path, group_pattern=GROUP_PATTERN), image_size=8, eval_fraction=0.3
    )
    split = ImageTextModality(params).eval_split()
    assert split.groups is not None and sum(split.groups.values()) == 10
    train = {name.rsplit("__", 1)[0] for name in split.train.names}
    test = {name.rsplit("__", 1)[0] for name in split.test.names}
    assert train and test and not train & test


def test_labeled_source_types_a_command_line_path(tmp_path):
    modality = ImageTextModality(ImageTextParams(image_size=8))
    assert modality.labeled_source(tmp_path, group=GROUP_PATTERN) == {
        "type": "folder",
        "path": str(tmp_path),
        "group_pattern": GROUP_PATTERN,
    }
    listed = tmp_path / "pairs.jsonl"
    assert modality.labeled_source(listed, label="kind") == {
        "type": "jsonl",
        "path": str(listed),
        "label_field": "kind",
    }
    with pytest.raises(ValueError, match="no group option"):
        modality.labeled_source(listed, group="g")
    with pytest.raises(ValueError, match="class subfolders; --label does not apply"):
        modality.labeled_source(tmp_path, label="kind")
