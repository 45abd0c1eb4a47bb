"""Tokenizers for the text modality: trained locally with HF ``tokenizers``, or loaded from disk.

A trained tokenizer uses BERT-style normalisation and pre-tokenisation and marks word
continuations with ``##`` for both WordPiece and BPE, so whole-word masking can find word
boundaries from the vocabulary alone. Special tokens come first in the vocabulary:
``[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

if TYPE_CHECKING:
    from sslhub import ModalityInfo

#: the tokenizer file saved in a run directory and beside an exported model
TOKENIZER_FILE = "tokenizer.json"

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CONTINUATION_PREFIX = "##"

# Names other tokenizer families use for the same roles (RoBERTa/GPT-2 and SentencePiece styles).
_ROLE_ALIASES = {
    "pad": ("[PAD]", "<pad>"),
    "unk": ("[UNK]", "<unk>"),
    "cls": ("[CLS]", "<s>"),
    "sep": ("[SEP]", "</s>"),
    "mask": ("[MASK]", "<mask>"),
}


class RereadableTexts(Iterable[str]):
    """Texts that can be read more than once: each pass calls ``make`` for a fresh iterable
    (a generator over a corpus on disk, say), so nothing is held in memory between passes."""

    def __init__(self, make: Callable[[], Iterable[str]]):
        self.make = make

    def __iter__(self) -> Iterator[str]:
        return iter(self.make())


def continuation_seeds(texts: Iterable[str], normalizer: normalizers.Normalizer) -> list[str]:
    """``##c`` for every character ``c`` the normalised ``texts`` can hold, sorted.

    Handed to the trainer before training, these tokens get their ids in sorted order instead of
    the hash-map order HF tokenizers gives the continuation tokens it meets (tokenizers issue
    #1794), and merges that tie on frequency are then broken the same way in every process. The
    characters are those of the raw texts, each normalised on its own: a few may never continue a
    word (punctuation, for one) and only add an unused vocabulary entry each.
    """
    raw: set[str] = set()
    for text in texts:
        raw.update(text)
    chars = {char for original in raw for char in normalizer.normalize_str(original) if not char.isspace()}
    return [CONTINUATION_PREFIX + char for char in sorted(chars)]


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 4000,
    lowercase: bool = True,
    algorithm: str = "wordpiece",
    min_frequency: int = 2,
) -> Tokenizer:
    """Train a WordPiece or BPE tokenizer on ``texts``.

    The same texts give the same tokenizer in every process when ``texts`` can be read twice (a
    list, or :class:`RereadableTexts`): a first pass collects the characters, whose continuation
    tokens are then numbered in sorted order (:func:`continuation_seeds`). A one-shot iterator is
    read once, and two trainings may then pick a few different merges on frequency ties (HF
    tokenizers numbers the continuation tokens in hash-map order, tokenizers issue #1794). Ids
    are canonical (sorted) either way. A run saves its tokenizer, and the text modality's
    ``cache_dir`` keeps one per corpus and settings, so that later runs reuse it.

    Args:
        texts: training documents. The trainer keeps word counts, not the texts, so a generator
            over a corpus larger than memory is fine (wrap it in :class:`RereadableTexts` to have
            it read twice, and the tokenizer reproducible).
        vocab_size: target vocabulary size including the special tokens.
        lowercase: lowercase and strip accents before splitting.
        algorithm: ``wordpiece`` or ``bpe``.
        min_frequency: minimum count for a merge / vocabulary entry.

    Returns:
        A tokenizer whose post-processor adds ``[CLS] ... [SEP]`` (for deployers that call
        ``encode`` with special tokens); the modality itself encodes without them and adds
        them explicitly so that documents can be packed.
    """
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
    )
    rereadable = iter(texts) is not texts
    seeds = continuation_seeds(texts, normalizer) if rereadable else []
    model, trainer = _untrained_model(algorithm, vocab_size, min_frequency, seeds)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX)
    tokenizer.train_from_iterator(iter(texts), trainer=trainer)
    tokenizer = _canonical_ids(tokenizer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tokenizer


def _untrained_model(
    algorithm: str, vocab_size: int, min_frequency: int, seeds: list[str]
) -> tuple[models.Model, trainers.Trainer]:
    """The empty WordPiece or BPE model and its trainer, both marking continuations with ``##``.

    ``seeds`` (continuation tokens) follow the special tokens in the trainer's initial
    vocabulary: it takes them in this order; :func:`_canonical_ids` unmarks them afterwards.
    """
    options = {
        "vocab_size": vocab_size,
        "min_frequency": min_frequency,
        "special_tokens": [*SPECIAL_TOKENS, *seeds],
        "continuing_subword_prefix": CONTINUATION_PREFIX,
        "show_progress": False,
    }
    if algorithm == "wordpiece":
        return (
            models.WordPiece(unk_token="[UNK]", continuing_subword_prefix=CONTINUATION_PREFIX),
            trainers.WordPieceTrainer(**options),
        )
    if algorithm == "bpe":
        return (
            models.BPE(unk_token="[UNK]", continuing_subword_prefix=CONTINUATION_PREFIX),
            trainers.BpeTrainer(**options),
        )
    raise ValueError(f"unknown tokenizer algorithm {algorithm!r}; expected 'wordpiece' or 'bpe'")


def _canonical_ids(tokenizer: Tokenizer) -> Tokenizer:
    """Renumber a freshly trained vocabulary: special tokens first, then the rest sorted.

    The trainers hand out ids in hash-map order, which differs between processes; sorted ids
    give the same id to the same token whichever process trained it. (Which tokens are chosen
    can still differ on frequency ties: see :func:`train_tokenizer`.) The continuation seeds
    the trainer was handed as special tokens become ordinary vocabulary entries.
    """
    state = json.loads(tokenizer.to_str())
    state["added_tokens"] = [token for token in state["added_tokens"] if token["content"] in SPECIAL_TOKENS]
    vocab: dict[str, int] = state["model"]["vocab"]
    special = sorted((i, t) for t, i in vocab.items() if t in SPECIAL_TOKENS)
    if [i for i, _ in special] != list(range(len(special))):
        raise RuntimeError(f"special tokens did not get the first ids: {special}")
    rest = sorted(t for t in vocab if t not in SPECIAL_TOKENS)
    state["model"]["vocab"] = {t: i for i, t in enumerate([t for _, t in special] + rest)}
    return Tokenizer.from_str(json.dumps(state))


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load ``tokenizer.json`` from a file path or a folder containing one."""
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"no tokenizer found at {path}: expected a tokenizer.json file or a folder containing one")
    return Tokenizer.from_file(str(file))


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the special tokens a tokenizer has (``None`` where it lacks one)."""

    pad: int
    unk: int | None
    cls: int | None
    sep: int | None
    mask: int | None
    all_ids: tuple[int, ...]

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> SpecialTokens:
        found: dict[str, int | None] = {}
        for role, names in _ROLE_ALIASES.items():
            found[role] = next((tokenizer.token_to_id(n) for n in names if tokenizer.token_to_id(n) is not None), None)
        if found["pad"] is None:
            raise ValueError("the tokenizer has no padding token ([PAD] or <pad>); add one to its vocabulary")
        # Every added special token counts, including ones outside the five roles.
        added = {
            token_id
            for token_id, token in tokenizer.get_added_tokens_decoder().items()
            if getattr(token, "special", False)
        }
        all_ids = tuple(sorted(added | {i for i in found.values() if i is not None}))
        return cls(
            pad=found["pad"], unk=found["unk"], cls=found["cls"], sep=found["sep"], mask=found["mask"], all_ids=all_ids
        )


def continuation_token_ids(tokenizer: Tokenizer, prefix: str = CONTINUATION_PREFIX) -> list[int]:
    """Ids of vocabulary entries that continue a word (start with ``prefix``), for whole-word masking."""
    return sorted(
        i for token, i in tokenizer.get_vocab().items() if token.startswith(prefix) and len(token) > len(prefix)
    )


def token_input_spec(info: ModalityInfo, lowercase: bool | None, template: str) -> dict[str, Any]:
    """The exported-model description of token inputs: ``input_ids``/``attention_mask`` int64
    ``[batch, sequence]`` and the constants a deployer needs to make them with ``tokenizer.json``.

    Args:
        info: the modality's ``info()`` (``max_length`` and the special token ids).
        lowercase: whether the trained tokenizer lowercases (``None`` for a loaded one).
        template: how a text is wrapped, e.g. ``"[CLS] text [SEP]"``.
    """
    return {
        "inputs": {
            "input_ids": {"dtype": "int64", "shape": ["batch", "sequence"]},
            "attention_mask": {"dtype": "int64", "shape": ["batch", "sequence"]},
        },
        "dynamic_axes": {
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
        },
        "preprocessing": {
            "tokenizer_file": TOKENIZER_FILE,
            "lowercase": lowercase,
            "template": template,
            "max_length": info.max_length,
            "padding": "right",
            "pad_token_id": info.pad_token_id,
            "cls_token_id": info.cls_token_id,
            "sep_token_id": info.sep_token_id,
            "vocab_size": info.vocab_size,
        },
    }


def save_beside_model(tokenizer: Tokenizer, out_dir: Path) -> list[str]:
    """Save ``tokenizer`` as ``out_dir/tokenizer.json`` (for ``Modality.write_export_files``)."""
    tokenizer.save(str(Path(out_dir) / TOKENIZER_FILE))
    return [TOKENIZER_FILE]
