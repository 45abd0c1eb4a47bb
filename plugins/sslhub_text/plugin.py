"""Hook implementations of the built-in text plugin: registrations only."""

from __future__ import annotations

from sslhub import hookimpl
from sslhub_text.augmentations.tokens import (
    RandomTokenReplacement,
    RandomTokenReplacementParams,
    SpanDeletion,
    SpanDeletionParams,
    TokenDropout,
    TokenDropoutParams,
)
from sslhub_text.encoders.causal_hf import CausalHFEncoder, CausalHFParams
from sslhub_text.encoders.hf_encoder import HFEncoder, HFParams
from sslhub_text.modality import TextModality
from sslhub_text.objectives.causal_lm import CausalLMObjective, CausalLMParams
from sslhub_text.objectives.mlm import MLMObjective, MLMParams
from sslhub_text.objectives.simcse import SimCSEObjective, SimCSEParams
from sslhub_text.objectives.split_contrastive import SplitContrastiveObjective, SplitContrastiveParams
from sslhub_text.params import TextParams


@hookimpl
def sslhub_register_modalities(registry):
    registry.register("text", TextModality, params=TextParams, provides=["word_continuations"])


@hookimpl
def sslhub_register_augmentations(registry):
    registry.register("token_dropout", TokenDropout, params=TokenDropoutParams, modalities=["text"])
    registry.register("span_deletion", SpanDeletion, params=SpanDeletionParams, modalities=["text"])
    registry.register(
        "random_token_replacement", RandomTokenReplacement, params=RandomTokenReplacementParams, modalities=["text"]
    )


@hookimpl
def sslhub_register_encoders(registry):
    registry.register(
        "hf", HFEncoder, params=HFParams, modalities=["text"], provides=["pooled", "tokens", "token_embeddings"]
    )
    registry.register(
        "hf_causal",
        CausalHFEncoder,
        params=CausalHFParams,
        modalities=["text"],
        provides=["pooled", "tokens", "causal", "token_embeddings"],
        description="decoder-only transformers model (GPT-2 by default) built from a config; no position sees later tokens",
    )


@hookimpl
def sslhub_register_objectives(registry):
    registry.register(
        # with whole_word_masking it also needs a modality with word_continuations (MLMParams.modality_needs)
        "mlm",
        MLMObjective,
        params=MLMParams,
        modalities=["text"],
        requires=["tokens", "token_embeddings"],
    )
    registry.register("simcse", SimCSEObjective, params=SimCSEParams, modalities=["text"], requires=["pooled"])
    registry.register(
        "split_contrastive",
        SplitContrastiveObjective,
        params=SplitContrastiveParams,
        modalities=["text"],
        requires=["pooled"],
        description="InfoNCE between two disjoint random halves of each text's words (topic from co-occurrence)",
    )
    registry.register(
        "causal_lm",
        CausalLMObjective,
        params=CausalLMParams,
        modalities=["text"],
        requires=["tokens", "causal", "token_embeddings"],
        description="next-token prediction (GPT-style) with a head tied to the token embeddings",
    )
