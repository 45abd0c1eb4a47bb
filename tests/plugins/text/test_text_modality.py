"""The text modality: samples, packing, dynamic padding, info, tokenizer files, labels, validation."""

from __future__ import annotations

import json
import logging
import pickle

import pytest
import torch
from pydantic import ValidationError
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from sslhub_text.modality import FilesSource, LocalTokenizer, TextModality, TextParams, TrainTokenizer


def test_samples_are_variable_length_int64_wrapped_in_cls(text_modality):
    info = text_modality.info()
    dataset = text_modality.train_dataset()
    lengths = set()
    for index in range(0, len(dataset), 97):
        sample = dataset[index]
        assert set(sample) == {"input_ids", "attention_mask"}
        assert sample["input_ids"].dtype == sample["attention_mask"].dtype == torch.int64
        assert sample["input_ids"].shape == sample["attention_mask"].shape
        assert sample["input_ids"][0] == info.cls_token_id
        assert 2 <= len(sample["input_ids"]) <= 32
        assert int(sample["input_ids"].max()) < info.vocab_size
        lengths.add(len(sample["input_ids"]))
    # packed: all but the last sample are full
    assert len(dataset[0]["input_ids"]) == 32
    assert len(dataset[len(dataset) - 1]["input_ids"]) <= 32


def test_packing_keeps_every_token_and_separates_documents(text_modality, tokenizer_dir):
    unpacked = TextModality(TextParams(max_length=32, pack=False, tokenizer=LocalTokenizer(path=str(tokenizer_dir))))
    info = text_modality.info()
    packed_ids = torch.cat([s["input_ids"] for s in text_modality.train_dataset()])
    unpacked_ids = torch.cat([s["input_ids"] for s in unpacked.train_dataset()])
    special = torch.tensor([info.cls_token_id, info.sep_token_id])
    content = lambda ids: ids[~torch.isin(ids, special)]  # noqa: E731
    assert torch.equal(content(packed_ids), content(unpacked_ids))
    # unpacked: each sample is [CLS] ... [SEP] of one document (long ones chunked)
    sample = unpacked.train_dataset()[3]["input_ids"]
    assert sample[0] == info.cls_token_id and sample[-1] == info.sep_token_id
    assert (sample == info.sep_token_id).sum() == 1


def test_collate_pads_to_the_longest_with_the_pad_id(text_modality):
    info = text_modality.info()
    split = text_modality.eval_split()
    samples = [split.train[i] for i in range(8)]
    batch = text_modality.collate(samples)
    longest = max(len(s["input_ids"]) for s in samples)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (8, longest)
    assert batch["label"].shape == (8,) and batch["label"].dtype == torch.int64
    for row, sample in enumerate(samples):
        n = len(sample["input_ids"])
        assert torch.equal(batch["input_ids"][row, :n], sample["input_ids"])
        assert (batch["input_ids"][row, n:] == info.pad_token_id).all()
        assert batch["attention_mask"][row].sum() == n


def test_pad_to_multiple_of_rounds_the_batch_length():
    modality = TextModality(TextParams(max_length=30, pad_to_multiple_of=8, tokenizer=TrainTokenizer(vocab_size=500)))
    batch = modality.collate([modality.train_dataset()[0]])
    assert batch["input_ids"].shape[1] == 32 and batch["attention_mask"][0].sum() == 30


def test_info_has_the_ids_objectives_need(text_modality):
    info = text_modality.info()
    tokenizer = text_modality.tokenizer
    assert info.vocab_size == tokenizer.get_vocab_size() <= 1000
    assert info.pad_token_id == tokenizer.token_to_id("[PAD]") == 0
    assert info.mask_token_id == tokenizer.token_to_id("[MASK]")
    assert info.cls_token_id == tokenizer.token_to_id("[CLS]")
    assert info.sep_token_id == tokenizer.token_to_id("[SEP]")
    assert info.special_token_ids == [0, 1, 2, 3, 4]
    assert info.max_length == 32
    continuation = text_modality.continuation_token_ids()
    assert continuation and all(tokenizer.id_to_token(i).startswith("##") for i in continuation)


def test_eval_split_labels_paragraphs_by_documentation_chapter(text_modality):
    split = text_modality.eval_split()
    assert "compound_statements" in split.class_names and len(split.class_names) == 8
    train_labels = {int(split.train[i]["label"]) for i in range(len(split.train))}
    assert train_labels == set(range(8))
    assert len(split.test) > 100
    # held-out paragraphs are also what held_out_dataset is built from
    assert text_modality.held_out_dataset() is not None


def test_datasets_are_deterministic_given_the_tokenizer_and_picklable(text_modality, tokenizer_dir):
    # HF tokenizers break count ties in hash-map order, so two trainings may differ in a few
    # rare tokens; a run is pinned by the tokenizer.json it saves, which is what is tested here.
    again = TextModality(TextParams(max_length=32, tokenizer=LocalTokenizer(path=str(tokenizer_dir))))
    assert again.fingerprint() != ""
    dataset = text_modality.train_dataset()
    assert len(again.train_dataset()) == len(dataset)
    assert torch.equal(again.train_dataset()[17]["input_ids"], dataset[17]["input_ids"])
    assert torch.equal(dataset[17]["input_ids"], dataset[17]["input_ids"])
    restored = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(restored[5]["input_ids"], dataset[5]["input_ids"])
    loader = DataLoader(dataset, batch_size=4, num_workers=1, collate_fn=text_modality.collate)
    first = next(iter(loader))
    assert torch.equal(first["input_ids"][0, : len(dataset[0]["input_ids"])], dataset[0]["input_ids"])


def test_trained_vocabulary_ids_are_canonical():
    from sslhub_text.tokenizer import SPECIAL_TOKENS, train_tokenizer

    tokenizer = train_tokenizer(["alpha beta gamma", "beta gamma delta"] * 5, vocab_size=60, min_frequency=1)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    tokens = [t for t, _ in vocab]
    assert tuple(tokens[: len(SPECIAL_TOKENS)]) == SPECIAL_TOKENS
    assert tokens[len(SPECIAL_TOKENS) :] == sorted(tokens[len(SPECIAL_TOKENS) :])
    assert tokenizer.encode("alpha delta").tokens == ["[CLS]", "alpha", "delta", "[SEP]"]


def test_prepare_saves_the_tokenizer_and_a_resume_reuses_it(tmp_path):
    params = TextParams(max_length=24, tokenizer=TrainTokenizer(vocab_size=300, algorithm="bpe"))
    modality = TextModality(params)
    modality.prepare(tmp_path)
    saved = tmp_path / "tokenizer.json"
    assert saved.is_file()
    assert Tokenizer.from_file(str(saved)).get_vocab() == modality.tokenizer.get_vocab()
    # a resumed run loads the file in its run dir instead of training again
    edited = Tokenizer.from_file(str(saved))
    edited.add_tokens(["resumedmarker"])
    edited.save(str(saved))
    reloaded = TextModality(params)
    reloaded.prepare(tmp_path)
    assert reloaded.tokenizer.token_to_id("resumedmarker") is not None
    assert modality.input_spec()["preprocessing"]["tokenizer_file"] == "tokenizer.json"

    local = TextModality(TextParams(max_length=24, tokenizer=LocalTokenizer(path=str(saved))))
    assert local.info().vocab_size == reloaded.info().vocab_size == modality.info().vocab_size + 1
    assert torch.equal(local.train_dataset()[0]["input_ids"], modality.train_dataset()[0]["input_ids"])


def test_files_source_with_labels_and_skip_warning(tmp_path, caplog):
    lines = [
        json.dumps({"text": f"the {animal} number {i} eats {food}", "kind": animal})
        for i in range(40)
        for animal, food in (("cat", "fish"), ("cow", "grass"))
    ]
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n\n{broken\n")
    params = TextParams(
        source=FilesSource(path=str(tmp_path), label_field="kind"),
        max_length=16,
        held_out_fraction=0.25,
        tokenizer=TrainTokenizer(vocab_size=100, min_frequency=1),
    )
    with caplog.at_level(logging.WARNING, logger="sslhub"):
        modality = TextModality(params)
        modality.prepare(None)
    assert "skipped 2 items" in caplog.text and "1 lines that are not valid JSON" in caplog.text
    split = modality.eval_split()
    assert list(split.class_names) == ["cat", "cow"]
    assert len(split.train) + len(split.test) == 80


def test_unlabeled_files_have_no_eval_split(tmp_path):
    (tmp_path / "a.txt").write_text("\n".join(f"line {i} of plain text" for i in range(50)))
    modality = TextModality(
        TextParams(source={"type": "files", "path": str(tmp_path)}, tokenizer={"type": "train", "vocab_size": 80})
    )
    assert modality.eval_split() is None
    assert len(modality.train_dataset()) > 0


def test_example_batch_and_input_spec(text_modality):
    batch = text_modality.example_batch(3)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (3, 32)
    assert (batch["input_ids"][:, 0] == text_modality.info().cls_token_id).all()
    spec = text_modality.input_spec()
    assert spec["inputs"]["input_ids"] == {"dtype": "int64", "shape": ["batch", "sequence"]}
    assert spec["dynamic_axes"]["attention_mask"] == {0: "batch", 1: "sequence"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"source": {"type": "web"}}, "does not match any of the expected tags"),
        ({"held_out_fraction": 1.0}, "less than 1"),
        ({"max_length": 2}, "greater than or equal to 4"),
        ({"tokenizer": {"type": "train", "algorithm": "unigram"}}, "'wordpiece' or 'bpe'"),
        ({"source": {"type": "files"}}, "path"),
        ({"maxlen": 3}, "Extra inputs are not permitted"),
        ({"cache_dir": "cache"}, "only streaming: true writes"),
        ({"tokenizer": {"type": "train", "max_documents": 0}}, "greater than or equal to 1"),
    ],
)
def test_bad_params_fail_validation(data, message):
    with pytest.raises(ValidationError, match=message):
        TextParams(**data)


def test_raw_features_are_a_bag_of_words_without_special_tokens(text_modality):
    from sslhub.testing import check_raw_features
    from sslhub_text.modality import bag_of_words

    info = text_modality.info()
    cls, sep, pad = info.cls_token_id, info.sep_token_id, info.pad_token_id
    input_ids = torch.tensor([[cls, 20, 20, 30, sep], [cls, 30, sep, pad, pad]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    raw = text_modality.raw_features({"input_ids": input_ids, "attention_mask": attention_mask})
    assert raw.shape == (2, info.vocab_size)
    first = torch.zeros(info.vocab_size)
    first[20], first[30] = torch.log1p(torch.tensor(2.0)), torch.log1p(torch.tensor(1.0))
    assert torch.allclose(raw[0], first / first.norm())
    assert raw[1].nonzero().flatten().tolist() == [30]  # [CLS], [SEP] and padding are not counted
    hashed = bag_of_words(torch.tensor([[5, 5 + 2048]]), torch.ones(1, 2, dtype=torch.long), vocab_size=10_000)
    assert hashed.shape == (1, 2048) and hashed[0, 5] == 1.0  # a large vocabulary shares columns
    scores = check_raw_features(text_modality, max_samples=300)
    assert scores[""] > 0.3  # eight documentation chapters: chance is 0.125


def test_augmentation_samples_show_each_sample_then_its_masked_view_as_text(text_modality):
    dataset = text_modality.train_dataset()
    short = dict(dataset[1])
    short = {k: v[: len(v) // 2] for k, v in short.items()}  # a shorter sample: the batch pads it
    batch = text_modality.collate([dataset[0], short])
    assert not batch["attention_mask"][1].all()  # the second row is padded
    info = text_modality.info()
    masked = batch["input_ids"].clone()
    masked[:, 2] = info.mask_token_id  # position 0 is [CLS]; 2 is content in both rows
    text = text_modality.augmentation_samples(batch, [{**batch, "input_ids": masked}, batch])["views"]
    lines = text.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "sample 1",
        "  view 1",
        "  view 2",
        "sample 2",
        "  view 1",
        "  view 2",
    ]
    assert lines[2] == lines[5] == "  view 2: (the sample, unchanged)"
    lines = [line for line in lines if "view 2" not in line]
    tokenizer = text_modality.tokenizer
    for row, (sample_line, view_line) in enumerate([lines[0:2], lines[2:4]]):
        ids = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
        assert ids[0] == info.cls_token_id
        content = [i for i in ids if i not in (info.cls_token_id, info.sep_token_id)]
        assert sample_line == f"sample {row + 1}: " + tokenizer.decode(content)
        assert "[MASK]" in view_line and "[MASK]" not in sample_line
        assert all(token not in sample_line + view_line for token in ("[PAD]", "[CLS]", "[SEP]"))
