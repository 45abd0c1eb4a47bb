"""``wav2vec2``: the wav2vec 2.0 objective -- contrast masked context vectors with quantized targets.

Per step (Baevski et al., 2020, section 3):

1. the encoder's local features ``z = embed_frames(batch)`` ``[B, T', D]`` (for the ``wav2vec2``
   encoder: the convolutional feature encoder and its projection; for ``frame_transformer``:
   the convolutional subsampling of log-mel frames);
2. span masking of those frames (:func:`~sslhub_audio.objectives.span_mask.span_mask`,
   ``mask_start_probability`` and ``mask_span``: the paper's ``p = 0.065`` and ``M = 10``), a
   learned mask embedding in their place, and the context network on top:
   ``c = transform_frames(masked z)``;
3. targets ``q``: the *unmasked* features at the masked frames through the Gumbel-softmax
   product quantizer (:class:`GumbelProductQuantizer`, ``G`` groups of ``V`` entries, Gumbel
   temperature annealed from 2 to 0.5 by a factor per training step);
4. the contrastive loss (equation 3): at each masked frame ``t``, ``c_t`` (through a linear map)
   must pick ``q_t`` among ``K`` distractors, quantized targets of other masked frames of the
   same utterance drawn uniformly, with cosine similarity over temperature ``kappa = 0.1``::

       L_m = -log( exp(sim(c_t, q_t) / kappa) / sum_{q in {q_t} + Q_t} exp(sim(c_t, q) / kappa) )

   (a distractor with the target's code is left out, as in fairseq);
5. the diversity loss ``L_d`` (equation 4) on the batch-averaged codebook softmax, averaged over
   all ranks under ``torchrun`` (negatives stay within each utterance, so on each rank), and an
   optional L2 penalty on the local features::

       loss = L_m + alpha * L_d + feature_penalty * mean(z ** 2)

Metrics: ``contrastive_loss``, ``diversity_loss``, ``contrastive_accuracy`` (share of masked
frames whose true target ranks first among the ``K + 1``; chance is ``1 / (K + 1)``),
``codebook_perplexity`` (1 = collapsed, ``V`` = uniform use), ``gumbel_temperature`` and
``masked_fraction``; held-out: the first three and ``codebook_perplexity`` with fixed masks and
distractors and no Gumbel noise. The encoder must declare ``frame_masking``
(``frame_transformer``, ``wav2vec2``, ``hubert``); ``sslhub validate`` refuses others.

Scaled down for CPUs: the paper's BASE model uses ``G = 2``, ``V = 320``, ``K = 100``, a
temperature decay of 0.999995 over 400k updates, 256-dimensional targets, and scales the
feature encoder's gradients by 0.1 (not done here).

References:
    - Baevski, Zhou, Mohamed and Auli, "wav2vec 2.0: A Framework for Self-Supervised Learning of
      Speech Representations", NeurIPS 2020, https://arxiv.org/abs/2006.11477
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from sslhub import Batch, BuildContext, Encoder, Modality, Objective, ObjectiveOutput, Params
from sslhub_audio.encoders.frame_masking import frame_width, replace_masked_frames
from sslhub_audio.losses.codebook_diversity import codebook_perplexity, diversity_loss
from sslhub_audio.losses.wav2vec2_contrastive import contrastive_logits, contrastive_loss, sample_distractors
from sslhub_audio.objectives.gumbel_quantizer import GumbelProductQuantizer
from sslhub_audio.objectives.span_mask import span_mask


class Wav2Vec2ObjectiveParams(Params):
    """Parameters of the ``wav2vec2`` objective (paper symbols in brackets)."""

    mask_start_probability: float = Field(0.065, gt=0, le=1, description="[p] probability a frame starts a span.")
    mask_span: int = Field(10, ge=2, description="[M] frames per masked span (>= 2, so a span has a distractor).")
    codebook_groups: int = Field(2, ge=1, description="[G] codebooks of the product quantizer.")
    codebook_entries: int = Field(32, ge=2, description="[V] entries per codebook (320 in the paper).")
    code_dim: int = Field(64, ge=1, description="Size of a quantized vector (G entries of code_dim / G values).")
    final_dim: int = Field(64, ge=1, description="Size of the space where context and targets are compared.")
    num_negatives: int = Field(10, ge=1, description="[K] distractors per masked frame (100 in the paper).")
    contrastive_temperature: float = Field(0.1, gt=0, description="[kappa] temperature of the cosine logits.")
    diversity_weight: float = Field(0.1, ge=0, description="[alpha] weight of the codebook diversity loss.")
    gumbel_temperature_start: float = Field(2.0, gt=0, description="[tau] Gumbel temperature at step 0.")
    gumbel_temperature_end: float = Field(0.5, gt=0, description="[tau] lowest Gumbel temperature.")
    gumbel_temperature_decay: float = Field(
        0.995,
        gt=0,
        le=1,
        description="tau is multiplied by this per training batch (0.999995 in the paper); a batch is an "
        "optimizer step, or one micro-batch with train.grad_accumulation.",
    )
    feature_penalty: float = Field(0.0, ge=0, description="Weight of the L2 penalty mean(z ** 2) on local features.")

    @model_validator(mode="after")
    def _check(self) -> Wav2Vec2ObjectiveParams:
        if self.code_dim % self.codebook_groups:
            raise ValueError(
                f"code_dim ({self.code_dim}) must be a multiple of codebook_groups ({self.codebook_groups})"
            )
        if self.gumbel_temperature_end > self.gumbel_temperature_start:
            raise ValueError(
                f"gumbel_temperature_end ({self.gumbel_temperature_end}) must not exceed "
                f"gumbel_temperature_start ({self.gumbel_temperature_start})"
            )
        return self


class Wav2Vec2Objective(Objective):
    """wav2vec 2.0: masked context vectors pick their quantized unmasked features among distractors."""

    num_views = 1

    def __init__(self, params: Wav2Vec2ObjectiveParams, context: BuildContext):
        super().__init__()
        encoder = context.encoder
        if not isinstance(encoder, Encoder):
            raise ValueError("objective 'wav2vec2' needs one built encoder in the build context")
        if "frame_masking" not in encoder.provides:
            raise ValueError(
                f"objective 'wav2vec2' needs an encoder that declares 'frame_masking' (local features before "
                f"the context network); {type(encoder).__name__} does not"
            )
        self.params = p = params
        dim = frame_width(encoder)  # it reads and masks frames
        self.mask_embedding = nn.Parameter(torch.empty(dim).uniform_())
        self.quantizer = GumbelProductQuantizer(dim, p.codebook_groups, p.codebook_entries, p.code_dim)
        self.project_targets = nn.Linear(p.code_dim, p.final_dim)
        self.project_context = nn.Linear(dim, p.final_dim)
        #: training batches seen (the Gumbel temperature's clock), saved in checkpoints.
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def gumbel_temperature(self) -> Tensor:
        """``tau = max(start * decay ** updates, end)``, 0-d."""
        p = self.params
        decay = torch.full((), p.gumbel_temperature_decay, device=self.updates.device)
        return (p.gumbel_temperature_start * decay.pow(self.updates.float())).clamp(min=p.gumbel_temperature_end)

    def terms(self, batch: Batch, encoder: Encoder, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The loss terms and statistics of one batch (masks and distractors from ``generator`` if given)."""
        p = self.params
        frames = encoder.embed_frames(batch)  # z: [B, T', D]
        mask = span_mask(
            frames.shape[0], frames.shape[1], p.mask_start_probability, p.mask_span, frames.device, generator
        )
        context = encoder.transform_frames(replace_masked_frames(frames, mask, self.mask_embedding)).tokens
        temperature = self.gumbel_temperature()
        quantized = self.quantizer(frames[mask], temperature)  # the unmasked features at the masked frames
        logits = contrastive_logits(
            self.project_context(context[mask]),
            self.project_targets(quantized.vectors),
            sample_distractors(mask, p.num_negatives, generator),
            quantized.codes,
            p.contrastive_temperature,
        )
        contrastive, accuracy = contrastive_loss(logits)
        return {
            "contrastive_loss": contrastive,
            "diversity_loss": diversity_loss(quantized.average_probabilities),
            "feature_penalty": frames.float().pow(2).mean(),
            "contrastive_accuracy": accuracy,
            "codebook_perplexity": codebook_perplexity(quantized.average_probabilities.detach()),
            "gumbel_temperature": temperature,
            "masked_fraction": mask.float().mean(),
        }

    def forward(self, views: list[Batch], encoder: Encoder) -> ObjectiveOutput:
        """Args: views: one batch with the encoder's inputs (``waveform [B, T]`` or ``features [B, n_mels, T]``)."""
        if len(views) != 1:
            raise ValueError(f"wav2vec2 needs 1 view, got {len(views)}")
        terms = self.terms(views[0], encoder)
        p = self.params
        loss = terms["contrastive_loss"] + p.diversity_weight * terms["diversity_loss"]
        if p.feature_penalty:
            loss = loss + p.feature_penalty * terms["feature_penalty"]
        if self.training:
            with torch.no_grad():
                self.updates += 1
        return ObjectiveOutput(loss=loss, metrics={key: value.detach() for key, value in terms.items()})

    @torch.no_grad()
    def held_out_metrics(self, batch: Batch, encoder: Encoder) -> dict[str, float]:
        """Contrastive loss and accuracy and codebook perplexity with fixed masks and distractors."""
        terms = self.terms(batch, encoder, torch.Generator().manual_seed(0))
        keys = ("contrastive_loss", "contrastive_accuracy", "codebook_perplexity", "diversity_loss")
        return {key: float(terms[key]) for key in keys}

    def report(self, run_dir: Path | None, encoder: Encoder, modality: Modality) -> dict[str, Any]:
        """What the held-out figures compare with: chance accuracy, the codebook's size, the final temperature."""
        p = self.params
        return {
            "chance_contrastive_accuracy": round(1.0 / (p.num_negatives + 1), 5),
            "codebook": {"groups": p.codebook_groups, "entries": p.codebook_entries},
            "codebook_perplexity_range": [1, p.codebook_entries],
            "gumbel_temperature": round(float(self.gumbel_temperature()), 5),
            "training_batches": int(self.updates),
        }
