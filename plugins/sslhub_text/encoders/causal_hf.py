"""The ``hf_causal`` encoder: a decoder-only transformers model (GPT-2 by default) built from a config.

Each position attends only to itself and earlier positions, so the encoder declares the
``causal`` capability that next-token prediction (``causal_lm``) requires. Input
``input_ids``/``attention_mask``: ``int64 [B, L]`` (right-padded). Output ``tokens``:
``[B, L, D]`` (the last hidden state, after the model's final norm), ``token_mask``:
``bool [B, L]``, ``pooled``: ``[B, D]``: the mean over the real tokens except [CLS]/[SEP]
(``pooling: mean``, the default), the state of the last real token (``pooling: last``: in a
causal model the only position that has read the whole text), the mean with weights
rising with position (``pooling: weighted_mean``: the k-th content token weighs k, so the
states that have read more of the text count more, as in SGPT), or the echo read-out
(``pooling: echo``: the text is fed twice in one sequence and the mean is taken over the
second copy's content states, each of which has read the whole text once already; twice
the sequence length to run). With ``echo`` the ``tokens`` are the first copy's states, which
are the plain sequence's (a causal position never sees what follows it).

The default was measured on the embedded corpus with the earlier ``recipes/text_causal_lm.yaml``
(GPT-2, next-token prediction alone, 200 steps), the same trained weights pooled both ways:
``mean`` probed better than ``last`` on the documentation-chapter kNN, linear and 20-shot probes
(0.447 / 0.468 / 0.315 against 0.421 / 0.447 / 0.281). With the split-contrastive term beside
it on real short texts, ``mean`` and ``weighted_mean`` trained alike and ``last`` slower
(benchmarks/realdata/RESULTS-text3.md).

References:
    - Muennighoff, "SGPT: GPT Sentence Embeddings for Semantic Search", 2022,
      https://arxiv.org/abs/2202.08904 (position-weighted mean pooling).
    - Springer et al., "Repetition Improves Language Model Embeddings", 2024,
      https://arxiv.org/abs/2402.15449 (echo embeddings).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from sslhub import BuildContext, Encoder, EncoderOutput, Modality
from sslhub_text.encoders.hf_encoder import (
    HFParams,
    _PooledTextExport,
    build_config,
    content_mask,
    content_mean,
    pool_excluded_ids,
    save_pretrained_folder,
)

#: transformers model types whose ``AutoModel`` attends causally (checked by the encoder tests).
CAUSAL_ARCHITECTURES = ("gpt2", "gpt_neox", "llama", "qwen2", "opt")


class CausalHFParams(HFParams):
    """Parameters of the ``hf_causal`` encoder (those of ``hf``, with a decoder-only architecture)."""

    architecture: str = Field(
        "gpt2", min_length=1, description=f"transformers model_type of a decoder-only model: {CAUSAL_ARCHITECTURES}."
    )
    pooling: Literal["mean", "last", "weighted_mean", "echo"] = Field(  # type: ignore[assignment]
        "mean",
        description="pooled is the mean over content tokens (mean), the last real token's state (last), the "
        "mean over content tokens weighted 1, 2, 3, ... by their order (weighted_mean), or the mean over the "
        "content tokens of the text's second copy when it is fed twice (echo; default position table twice "
        "max_length).",
    )
    local_path: None = Field(None, description="Not supported: hf_causal builds from a config (pretrained=False).")


def last_token_states(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """``[B, L, D] -> [B, D]``: the state at each row's last real position (right padding).

    A row without real tokens gives position 0's state.
    """
    last = (attention_mask.sum(1) - 1).clamp_min(0).to(torch.int64)
    return hidden.gather(1, last.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])).squeeze(1)


def position_weighted_mean(hidden: Tensor, input_ids: Tensor, attention_mask: Tensor, excluded_ids: Tensor) -> Tensor:
    """``[B, L, D] -> [B, D]``: mean over content tokens, the k-th of a row weighted k.

    Content tokens as in :func:`~sslhub_text.encoders.hf_encoder.content_mask` (real, id not in
    ``excluded_ids``). In a causal model the k-th content state has read k content tokens.
    """
    mask = content_mask(input_ids, attention_mask, excluded_ids, hidden.dtype)
    weights = (mask.cumsum(1) * mask).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def echo_sequences(input_ids: Tensor, attention_mask: Tensor, pad_token_id: int) -> tuple[Tensor, Tensor]:
    """Each row's real tokens twice in a row: ``(ids, second)``, ``[B, 2L]`` each.

    Args:
        input_ids: ``int64 [B, L]``, right-padded.
        attention_mask: ``[B, L]``, 1 at real tokens.
        pad_token_id: id written after the two copies.

    Returns:
        ``ids`` (a row of ``n`` real tokens holds them at ``0 .. n-1`` and again at
        ``n .. 2n-1``, then padding) and ``second`` (1 at the second copy's ``n`` positions,
        of ``attention_mask``'s dtype).
    """
    batch, length = input_ids.shape
    lengths = attention_mask.sum(dim=1, keepdim=True)
    positions = torch.arange(length, device=input_ids.device).unsqueeze(0)
    real = attention_mask.bool()
    dump = torch.full_like(input_ids, 2 * length)  # a spare column for padding, cut off below
    first_at = torch.where(real, positions.expand_as(input_ids), dump)
    second_at = torch.where(real, positions + lengths, dump)
    ids = torch.full((batch, 2 * length + 1), pad_token_id, dtype=input_ids.dtype, device=input_ids.device)
    ids = ids.scatter(1, first_at, input_ids).scatter(1, second_at, input_ids)[:, :-1]
    doubled = torch.arange(2 * length, device=input_ids.device).unsqueeze(0)
    second = ((doubled >= lengths) & (doubled < 2 * lengths)).to(attention_mask.dtype)
    return ids, second


class CausalHFEncoder(Encoder):
    """A decoder-only transformers model (``AutoModel`` from a config) over token ids.

    Args:
        params: :class:`CausalHFParams`.
        context: its ``modality.info()`` gives ``vocab_size``, ``pad_token_id`` and ``max_length``.

    Raises:
        ValueError: an architecture outside :data:`CAUSAL_ARCHITECTURES`, or no modality.
    """

    input_names = ("input_ids", "attention_mask")
    provides = frozenset({"pooled", "tokens", "causal", "token_embeddings"})

    def __init__(self, params: CausalHFParams, context: BuildContext):
        super().__init__()
        from transformers import AutoModel

        if params.architecture not in CAUSAL_ARCHITECTURES:
            raise ValueError(
                f"hf_causal encoder: architecture {params.architecture!r} is not a known decoder-only model; "
                f"choose one of {', '.join(CAUSAL_ARCHITECTURES)} (the 'hf' encoder builds bidirectional ones)"
            )
        if context.modality is None:
            raise ValueError("hf_causal encoder needs a built modality to size its vocabulary")
        info = context.modality.info()
        who = f"hf_causal encoder (modality {context.modality_name!r})"
        max_length = int(info.needed("max_length", who))
        # echo feeds each text twice: the position table must reach twice the longest text
        positions = 2 * max_length if params.pooling == "echo" else max_length
        self.pad_token_id = int(info.needed("pad_token_id", who))
        config = build_config(params, info.needed("vocab_size", who), self.pad_token_id, positions)
        # Grouped-query models (llama, qwen2) keep their default key/value head count otherwise.
        if hasattr(config, "num_key_value_heads") and "num_key_value_heads" not in params.config_overrides:
            config.num_key_value_heads = params.num_heads
        self.model = AutoModel.from_config(config, attn_implementation="sdpa")
        # forward() passes no attention mask (see there); with a pad id set, transformers would
        # look for padding in every batch to warn about that, reading a value back from the device.
        # The embedding tables are built by now, so the pad id has done its work.
        self.model.config.pad_token_id = None
        self.pooling = params.pooling
        self.register_buffer("pool_excluded_ids", pool_excluded_ids(info, params.pool_special_tokens), persistent=False)
        self.feature_dim = int(self.model.config.hidden_size)

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding table ``[V, D]`` (the next-token head ties its weight to it)."""
        return self.model.get_input_embeddings()

    def forward(self, batch: Mapping[str, Tensor]) -> EncoderOutput:
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        if self.pooling == "echo":
            return self._echo_forward(input_ids, attention_mask)
        # No attention mask for the model: with right padding, causal attention already keeps every
        # real position from seeing padding (all earlier positions are real), and transformers
        # reads a given padding mask back to the host (is it all ones?), stalling each step.
        # Padding positions' states are garbage; the loss and pooling leave them out.
        hidden = self.model(input_ids=input_ids).last_hidden_state
        if self.pooling == "last":
            pooled = last_token_states(hidden, attention_mask)
        elif self.pooling == "weighted_mean":
            pooled = position_weighted_mean(hidden, input_ids, attention_mask, self.pool_excluded_ids)
        else:
            pooled = content_mean(hidden, input_ids, attention_mask, self.pool_excluded_ids)
        return EncoderOutput(pooled=pooled, tokens=hidden, token_mask=attention_mask.bool())

    def _echo_forward(self, input_ids: Tensor, attention_mask: Tensor) -> EncoderOutput:
        """``pooling: echo``: one pass over each text twice; pooled from the second copy, tokens from the first."""
        echo_ids, second = echo_sequences(input_ids, attention_mask, self.pad_token_id)
        hidden = self.model(input_ids=echo_ids).last_hidden_state  # no mask: see forward()
        pooled = content_mean(hidden, echo_ids, second, self.pool_excluded_ids)
        tokens = hidden[:, : input_ids.shape[1]]
        return EncoderOutput(pooled=pooled, tokens=tokens, token_mask=attention_mask.bool())

    def export_module(self) -> nn.Module:
        """``(input_ids [B, L], attention_mask [B, L]) -> pooled [B, D]`` with named arguments."""
        return _PooledTextExport(self)

    def export_native(self, directory: Path, modality: Modality) -> dict[str, str]:
        """A ``save_pretrained`` folder (see :func:`~sslhub_text.encoders.hf_encoder.save_pretrained_folder`).

        ``AutoModel(input_ids).last_hidden_state`` equals this encoder's ``tokens`` (with right
        padding, an attention mask changes only the padding positions' states).
        """
        return save_pretrained_folder(self.model, modality, directory, self.input_names)
