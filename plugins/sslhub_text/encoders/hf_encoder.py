"""The ``hf`` encoder: any transformers encoder built from a config, or a local checkpoint.

Input ``input_ids``/``attention_mask``: ``int64 [B, L]``. Output ``tokens``: ``[B, L, D]``
(the last hidden state), ``token_mask``: ``bool [B, L]``, ``pooled``: ``[B, D]`` (masked mean
over real tokens except [CLS]/[SEP], or the first token's state with ``pooling: cls``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from sslhub import BuildContext, Encoder, EncoderOutput, Modality, ModalityInfo, Params

# Standard size names -> the attribute names config classes use for them. Most configs map
# ``hidden_size`` etc. through ``attribute_map`` themselves; these cover the rest.
_SIZE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "hidden_size": ("hidden_size", "d_model", "dim", "n_embd"),
    "num_layers": ("num_hidden_layers", "n_layers", "num_layers", "encoder_layers", "n_layer"),
    "num_heads": ("num_attention_heads", "n_heads", "encoder_attention_heads", "n_head"),
    "intermediate_size": ("intermediate_size", "hidden_dim", "encoder_ffn_dim", "ffn_dim", "n_inner"),
    "max_position_embeddings": ("max_position_embeddings", "n_positions"),
}
_DROPOUT_ATTRIBUTES = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "dropout",
    "attention_dropout",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
)
# Position ids of RoBERTa-style models start after the padding index, so they need extra rows.
_POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "longformer": 2, "data2vec-text": 2}


class HFParams(Params):
    """Parameters of the ``hf`` encoder."""

    architecture: str = Field(
        "bert", min_length=1, description="transformers model_type (bert, roberta, distilbert, electra, ...)."
    )
    hidden_size: int = Field(128, gt=0, description="Width of the hidden states (the feature dimension).")
    num_layers: int = Field(2, gt=0, description="Number of transformer layers.")
    num_heads: int = Field(2, gt=0, description="Attention heads per layer; must divide hidden_size.")
    intermediate_size: int | None = Field(None, gt=0, description="Feed-forward width; default 4 * hidden_size.")
    max_position_embeddings: int | None = Field(
        None, gt=0, description="Position table size; default the modality's max_length (+ the model's offset)."
    )
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Hidden and attention dropout.")
    config_overrides: dict[str, Any] = Field(
        default_factory=dict, description="Further config attributes, set after the ones above (names must exist)."
    )
    local_path: str | None = Field(
        None, description="Load a local checkpoint folder with from_pretrained(local_files_only=True) instead."
    )
    pooling: Literal["mean", "cls"] = Field("mean", description="How pooled is formed from the token states.")
    pool_special_tokens: bool = Field(
        False,
        description="With mean pooling, include the [CLS]/[SEP] states in the mean (False: real content tokens only).",
    )


def build_config(params: HFParams, vocab_size: int, pad_token_id: int, max_length: int) -> Any:
    """A transformers config of ``params.architecture`` sized by ``params`` and the vocabulary.

    Raises:
        ValueError: unknown architecture, heads not dividing the width, or an override naming
            an attribute the config does not have.
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.for_model(params.architecture)
    except ValueError as exc:
        raise ValueError(f"hf encoder: unknown architecture {params.architecture!r} ({exc})") from None
    if params.hidden_size % params.num_heads:
        raise ValueError(
            f"hf encoder: hidden_size {params.hidden_size} is not divisible by num_heads {params.num_heads}"
        )
    offset = _POSITION_OFFSET.get(config.model_type, 0)
    wanted = {
        "hidden_size": params.hidden_size,
        "num_layers": params.num_layers,
        "num_heads": params.num_heads,
        "intermediate_size": params.intermediate_size or 4 * params.hidden_size,
        "max_position_embeddings": params.max_position_embeddings or max_length + offset,
    }
    for name, value in wanted.items():
        attributes = [a for a in _SIZE_ATTRIBUTES[name] if hasattr(config, a)]
        if not attributes:
            raise ValueError(f"hf encoder: {params.architecture} config has no attribute for {name}")
        setattr(config, attributes[0], value)
    for attribute in _DROPOUT_ATTRIBUTES:
        if hasattr(config, attribute) and isinstance(getattr(config, attribute), float):
            setattr(config, attribute, params.dropout)
    config.vocab_size = vocab_size
    config.pad_token_id = pad_token_id
    for key, value in params.config_overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"hf encoder: config_overrides key {key!r} is not an attribute of {type(config).__name__}")
        setattr(config, key, value)
    return config


def pool_excluded_ids(info: ModalityInfo, pool_special_tokens: bool) -> Tensor:
    """``int64 [K]``: ids left out of mean pooling, [CLS] and [SEP] unless ``pool_special_tokens``.

    They carry no content, and their states dominate the mean of short texts. -1 (matches
    nothing) stands where the tokenizer lacks one.
    """
    excluded = [] if pool_special_tokens else [info.cls_token_id, info.sep_token_id]
    return torch.tensor([-1 if i is None else int(i) for i in excluded] or [-1], dtype=torch.int64)


def content_mask(input_ids: Tensor, attention_mask: Tensor, excluded_ids: Tensor, dtype: torch.dtype) -> Tensor:
    """``[B, L]`` of ``dtype``: 1 at real tokens whose id is not in ``excluded_ids`` (``int64 [K]``), else 0.

    A row with no such token falls back to all its real tokens. Float arithmetic, not bool
    where/any, because onnxruntime lacks Where/ReduceMax for bool.
    """
    real = attention_mask.to(dtype)
    special = (input_ids.unsqueeze(-1) == excluded_ids).to(dtype).sum(-1)
    content = real * (1.0 - special.clamp_max(1.0))
    empty = (content.sum(1, keepdim=True) == 0).to(dtype)
    return content + empty * real


def content_mean(hidden: Tensor, input_ids: Tensor, attention_mask: Tensor, excluded_ids: Tensor) -> Tensor:
    """``[B, L, D] -> [B, D]``: mean over real tokens whose id is not in ``excluded_ids`` (``int64 [K]``).

    A row with no such token falls back to all its real tokens (see :func:`content_mask`).
    """
    mask = content_mask(input_ids, attention_mask, excluded_ids, hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class HFEncoder(Encoder):
    """A transformers encoder (``AutoModel``) over token ids, with mean or [CLS] pooling.

    Args:
        params: :class:`HFParams`.
        context: its ``modality.info()`` gives ``vocab_size``, ``pad_token_id`` and ``max_length``.
    """

    input_names = ("input_ids", "attention_mask")
    provides = frozenset({"pooled", "tokens", "token_embeddings"})

    def __init__(self, params: HFParams, context: BuildContext):
        super().__init__()
        from transformers import AutoModel

        if context.modality is None:
            raise ValueError("hf encoder needs a built modality to size its vocabulary")
        info = context.modality.info()
        for key in ("vocab_size", "pad_token_id", "max_length"):
            info.needed(key, f"hf encoder (modality {context.modality_name!r})")
        self.pooling = params.pooling
        self.register_buffer("pool_excluded_ids", pool_excluded_ids(info, params.pool_special_tokens), persistent=False)
        if params.local_path is not None:
            kwargs = {"add_pooling_layer": False} if _has_pooler(_local_model_type(params.local_path)) else {}
            self.model = AutoModel.from_pretrained(
                params.local_path, local_files_only=True, attn_implementation="sdpa", **kwargs
            )
            model_vocab = self.model.get_input_embeddings().num_embeddings
            if model_vocab < info.vocab_size:
                raise ValueError(
                    f"hf encoder: checkpoint {params.local_path} has {model_vocab} token embeddings but the "
                    f"tokenizer has {info.vocab_size} tokens; use that checkpoint's tokenizer (tokenizer: "
                    "{type: local, path: ...})"
                )
        else:
            config = build_config(params, info.vocab_size, info.pad_token_id, info.max_length)
            kwargs = {"add_pooling_layer": False} if _has_pooler(config.model_type) else {}
            self.model = AutoModel.from_config(config, attn_implementation="sdpa", **kwargs)
        self.feature_dim = int(self.model.config.hidden_size)

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding table ``[V, E]`` (an MLM decoder ties its weight to it)."""
        return self.model.get_input_embeddings()

    def forward(self, batch: Mapping[str, Tensor]) -> EncoderOutput:
        attention_mask = batch["attention_mask"]
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            pooled = content_mean(hidden, batch["input_ids"], attention_mask, self.pool_excluded_ids)
        return EncoderOutput(pooled=pooled, tokens=hidden, token_mask=attention_mask.bool())

    def export_module(self) -> nn.Module:
        """``(input_ids [B, L], attention_mask [B, L]) -> pooled [B, D]`` with named arguments.

        Named (not ``*inputs``) arguments let ``torch.onnx.export(dynamo=True)`` map
        ``dynamic_axes`` / ``dynamic_shapes`` onto each input.
        """
        return _PooledTextExport(self)

    def export_native(self, directory: Path, modality: Modality) -> dict[str, str]:
        """A ``save_pretrained`` folder: ``AutoModel`` / ``AutoTokenizer.from_pretrained(directory)`` load it.

        ``AutoModel(input_ids, attention_mask).last_hidden_state`` equals this encoder's
        ``tokens``; ``pooled`` is their mean over real tokens except [CLS]/[SEP] (or the first
        token's state with ``pooling: cls``).
        """
        return save_pretrained_folder(self.model, modality, directory, self.input_names)


class _PooledTextExport(nn.Module):
    def __init__(self, encoder: HFEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.encoder({"input_ids": input_ids, "attention_mask": attention_mask}).pooled


def save_pretrained_folder(
    model: Any, modality: Modality, directory: Path, input_names: Sequence[str]
) -> dict[str, str]:
    """``model.save_pretrained(directory)`` plus the modality's tokenizer as a transformers fast tokenizer.

    The sslhub tokenizer is a ``tokenizers`` file; wrapped in ``PreTrainedTokenizerFast`` with
    the modality's special tokens and ``max_length``, ``AutoTokenizer.from_pretrained(directory)``
    tokenizes as the modality does (``[CLS] text [SEP]``, truncated to ``max_length``).
    Returns ``{}`` (nothing written) for a modality without a tokenizer file.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    written = modality.write_export_files(directory, list(input_names))
    info = modality.info()
    tokenizer_name = str(info.tokenizer_file or "tokenizer.json")
    if tokenizer_name not in written:
        for name in written:
            (directory / name).unlink(missing_ok=True)
        return {}
    tokenizer = Tokenizer.from_file(str(directory / tokenizer_name))
    roles = {"pad_token": "pad_token_id", "unk_token": "unk_token_id", "cls_token": "cls_token_id"}
    roles |= {"sep_token": "sep_token_id", "mask_token": "mask_token_id"}
    ids = {role: getattr(info, key) for role, key in roles.items()}
    special = {role: tokenizer.id_to_token(i) for role, i in ids.items() if i is not None}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=int(info.needed("max_length", "hf native export")),
        padding_side="right",
        **special,
    )
    fast.save_pretrained(str(directory))
    model.save_pretrained(str(directory))
    return {
        "config.json": "transformers config: AutoModel.from_pretrained(folder)",
        "model.safetensors": "transformers weights",
        "tokenizer.json": "AutoTokenizer.from_pretrained(folder) (with tokenizer_config.json)",
        "tokenizer_config.json": "tokenizer settings: special tokens, model_max_length",
    }


def _has_pooler(model_type: str) -> bool:
    """Whether the model class takes ``add_pooling_layer`` (its unused pooler is left out)."""
    return model_type in ("bert", "roberta", "xlm-roberta", "camembert", "data2vec-text")


def _local_model_type(path: str) -> str:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path, local_files_only=True).model_type
