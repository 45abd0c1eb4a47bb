"""``autoencoder``: encode the input, decode it back, minimise the reconstruction error.

Three variants share one module: ``plain``; ``denoising`` (the encoder sees a corrupted
input, the decoder must give back the clean one); ``variational`` (a Gaussian latent with a
KL term, i.e. a VAE, optionally a beta-VAE through ``kl_weight``).

What is reconstructed -- the *target key* -- follows the modality (``context.modality_name``):

=============  ==============  ===========================  =============================================
modality       target key      shape                         decoder
=============  ==============  ===========================  =============================================
``image``      ``image``       ``[B, C, H, W]`` in [0, 1]    transposed convs from ``spatial``, or from the
                                                             pooled vector (linear -> 4x4 seed map)
``audio``      ``features``    ``[B, n_mels, T]`` log-mel    1-D transposed convs along time from
                                                             ``tokens [B, T', D]`` (or the pooled vector)
``tabular``    ``vector``      ``[B, D]``                    MLP from the pooled vector
=============  ==============  ===========================  =============================================

Other modalities work when they have one float input of one of these ranks; ``target``
names the key explicitly. ``decode_from: auto`` decodes images from ``spatial`` when the
encoder has it, spectrograms from ``tokens``, and everything else from ``pooled``.

When the modality's ``info()`` says ``value_range: [0, 1]`` (images) the decoder's output
goes through a sigmoid and ``loss: bce`` is allowed (the Bernoulli likelihood); other data
are reconstructed unbounded, with ``mse`` or ``l1``.

The variational loss is the negative ELBO per target element (beta-weighted)::

    loss = mean_b [ recon_b + kl_weight_t * KL_b / n ]

with ``recon_b`` the mean per-element reconstruction error of sample ``b``, ``KL_b`` its KL
divergence in nats summed over the latent, ``n`` the number of target elements per sample,
and ``kl_weight_t`` ramped linearly from 0 to ``kl_weight`` over ``kl_warmup_steps``
training calls (counted in a buffer, so checkpoints restore the ramp). With ``loss: bce`` and
``kl_weight: 1`` this is exactly the negative ELBO divided by ``n``. The metrics report the
two ELBO terms apart: ``reconstruction`` and ``kl`` (nats per sample).

References:
    - Hinton and Salakhutdinov, "Reducing the Dimensionality of Data with Neural Networks",
      Science 2006
    - Vincent et al., "Extracting and Composing Robust Features with Denoising Autoencoders", ICML 2008
    - Kingma and Welling, "Auto-Encoding Variational Bayes", ICLR 2014, https://arxiv.org/abs/1312.6114
    - Higgins et al., "beta-VAE", ICLR 2017
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from sslhub import Batch, BuildContext, Encoder, Modality, Objective, ObjectiveOutput, Params
from sslhub_autoencoder.corruption import corrupt_with_mask
from sslhub_autoencoder.heads import LatentHead
from sslhub_autoencoder.losses import gaussian_kl, reconstruction_error
from sslhub_autoencoder.reconstruction import (
    TARGET_KEYS,
    build_decoder,
    choose_source,
    evaluation_mode,
    held_out_batches,
    held_out_subset,
    probe_encoder,
    save_reconstruction_grid,
)


class AutoencoderParams(Params):
    """Parameters of the ``autoencoder`` objective."""

    variant: Literal["plain", "denoising", "variational"] = Field(
        "plain", description="plain | denoising (corrupt the input, reconstruct the clean one) | variational (VAE)"
    )
    loss: Literal["mse", "l1", "bce"] = Field(
        "mse", description="reconstruction loss; bce only for data in [0, 1] (images)"
    )
    bottleneck: int = Field(
        64,
        gt=0,
        description="size of the linear (or Gaussian) code: a vector of this size when decoding from pooled, "
        "this many channels per position when decoding from spatial or tokens",
    )
    decode_from: Literal["auto", "pooled", "spatial", "tokens"] = Field(
        "auto",
        description="encoder feature the decoder starts from; auto: spatial for images when present, "
        "tokens for spectrograms when present, else pooled",
    )
    target: str | None = Field(
        None,
        description="batch key to reconstruct; default by modality: image->image, audio->features, tabular->vector",
    )
    decoder_width: int = Field(32, gt=0, le=1024, description="channels of the conv decoders' last stage")
    decoder_hidden: list[int] = Field(
        default_factory=lambda: [128], description="hidden layer sizes of the MLP decoder (vector data)"
    )
    noise: Literal["gaussian", "dropout", "swap"] = Field(
        "gaussian",
        description="denoising corruption: additive gaussian, dropout (masking) noise, or swap noise "
        "(tables: a cell takes the same column's value from a random other row of the batch)",
    )
    noise_level: float = Field(
        0.2, ge=0.0, description="denoising: gaussian std in data units, or dropout / swap probability (< 1)"
    )
    mask_weight: float = Field(
        0.0,
        ge=0.0,
        description="denoising with dropout or swap noise on table rows: weight of a second term in which a "
        "linear head on the code tells which cells were corrupted (VIME's mask estimation); 0: off",
    )
    kl_weight: float = Field(1.0, ge=0.0, description="variational: weight of the KL term (beta)")
    kl_warmup_steps: int = Field(
        0, ge=0, description="variational: training steps over which the KL weight ramps linearly from 0"
    )
    report_samples: int = Field(
        512, ge=1, description="held-out samples used for the reconstruction error in the report"
    )

    @model_validator(mode="after")
    def _check(self) -> AutoencoderParams:
        if self.variant == "denoising":
            if self.noise_level <= 0:
                raise ValueError("variant denoising needs noise_level > 0")
            if self.noise in ("dropout", "swap") and self.noise_level >= 1:
                raise ValueError(f"{self.noise} noise_level is a probability and must be < 1, got {self.noise_level}")
        if self.mask_weight > 0 and (self.variant != "denoising" or self.noise == "gaussian"):
            raise ValueError(
                "mask_weight needs variant denoising with dropout or swap noise (gaussian noise touches every "
                "cell, so there is no mask to predict)"
            )
        if any(h <= 0 for h in self.decoder_hidden):
            raise ValueError(f"decoder_hidden sizes must be > 0, got {self.decoder_hidden}")
        return self


def _target_key(params: AutoencoderParams, modality: Modality, modality_name: str, example: Batch) -> str:
    if params.target is not None:
        key = params.target
    elif modality_name in TARGET_KEYS:
        key = TARGET_KEYS[modality_name]
    else:
        candidates = [k for k in modality.input_names if k in example and example[k].is_floating_point()]
        if len(candidates) != 1:
            raise ValueError(
                f"autoencoder cannot tell what to reconstruct for modality {modality_name!r} "
                f"(float inputs: {candidates or 'none'}); set `target:` to a batch key"
            )
        key = candidates[0]
    if key not in example:
        raise ValueError(f"autoencoder target {key!r} is not in the modality's batch (keys: {sorted(example)})")
    if not example[key].is_floating_point():
        raise ValueError(
            f"autoencoder target {key!r} holds {example[key].dtype} values; it reconstructs float data "
            "(images, spectrograms, vectors), not token ids"
        )
    if example[key].dim() not in (2, 3, 4):
        raise ValueError(
            f"autoencoder target {key!r} has shape {list(example[key].shape)}; expected [B, D] vectors, "
            "[B, F, T] spectrograms or [B, C, H, W] images"
        )
    return key


class AutoencoderObjective(Objective):
    """Plain, denoising or variational autoencoder over the modality's main input.

    Inputs: one view holding the target key (see the module docstring). Metrics:
    ``reconstruction`` (the mean per-element loss), ``mse``; variational adds ``kl`` (nats
    per sample) and ``kl_weight`` (the ramped weight in use).
    """

    num_views = 1

    def __init__(self, params: AutoencoderParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params = params or AutoencoderParams()
        if context is None or context.encoder is None or context.modality is None:
            raise ValueError("autoencoder needs the built encoder and modality (context.encoder, context.modality)")
        encoder, modality = context.encoder, context.modality
        if not isinstance(encoder, Encoder):
            raise ValueError("autoencoder uses one encoder; pick it with the objective's `encoder:` key")
        example = modality.example_batch(2, context.device)
        self.target_key = _target_key(params, modality, context.modality_name, example)
        target = example[self.target_key]
        value_range = modality.info().value_range
        self.bounded = value_range is not None and [float(v) for v in value_range] == [0.0, 1.0]
        if params.loss == "bce" and not self.bounded:
            raise ValueError(
                f"loss bce needs data in [0, 1]; the {context.modality_name or 'given'} modality does not declare "
                "value_range [0, 1] (use mse or l1)"
            )
        features = probe_encoder(encoder, example)
        self.decode_from = choose_source(params.decode_from, target, features, self.target_key)
        variational = params.variant == "variational"
        source = getattr(features, self.decode_from)
        self.latent = LatentHead(
            source.shape[1] if self.decode_from == "spatial" else source.shape[-1],
            params.bottleneck,
            variational=variational,
            channel_axis=1 if self.decode_from == "spatial" else -1,
        )
        self.decoder = build_decoder(
            params.bottleneck, self.decode_from, target, source, params.decoder_width, params.decoder_hidden
        )
        self.mask_head = self._mask_head(params, target)
        # optimizer steps seen in training, for the KL warm-up; a buffer so checkpoints keep it
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def _mask_head(self, params: AutoencoderParams, target: Tensor) -> nn.Linear | None:
        """The code -> per-column corruption logits head of ``mask_weight``, or ``None`` when off."""
        if params.mask_weight == 0:
            return None
        if target.dim() != 2 or self.decode_from != "pooled":
            raise ValueError(
                f"mask_weight predicts which columns of a table row were corrupted; the target "
                f"{self.target_key!r} has shape {list(target.shape)[1:]} per sample, not a row of columns"
            )
        return nn.Linear(params.bottleneck, target.shape[1])

    # -- the objective ------------------------------------------------------------------------

    def kl_weight_now(self) -> Tensor:
        """The KL weight at the current step: ``kl_weight * min(1, step / kl_warmup_steps)`` (0-d)."""
        weight = torch.full((), self.params.kl_weight, device=self.step.device)
        if self.params.kl_warmup_steps == 0:
            return weight
        return weight * (self.step.float() / self.params.kl_warmup_steps).clamp(max=1.0)

    def reconstruct(self, batch: Batch, encoder: Encoder, corrupt_input: bool = True) -> dict[str, Any]:
        """Encode (a corrupted copy of) the target and decode it.

        Returns:
            ``target``, ``input`` (what the encoder saw), ``output`` (raw decoder output,
            logits for ``[0, 1]`` data), ``prediction`` (in data space), ``mu``/``logvar`` (or
            ``None``), ``code`` (the latent the decoder read) and ``corrupted`` (the bool mask of
            corrupted elements for dropout and swap noise, else ``None``).
        """
        target = batch[self.target_key]
        seen, corrupted = target, None
        if corrupt_input and self.params.variant == "denoising":
            value_range = (0.0, 1.0) if self.bounded else None
            seen, corrupted = corrupt_with_mask(target, self.params.noise, self.params.noise_level, value_range)
        features = getattr(encoder({**batch, self.target_key: seen}), self.decode_from)
        if features is None:
            raise ValueError(
                f"autoencoder decodes from the encoder's {self.decode_from} features, and it returned none"
            )
        code, mu, logvar = self.latent(features)
        if target.dim() == 3:
            output = self.decoder(code, target.shape[-1])
        else:
            output = self.decoder(code)
        output = output.float()
        prediction = output.sigmoid() if self.bounded else output
        return {
            "target": target,
            "input": seen,
            "output": output,
            "prediction": prediction,
            "mu": mu,
            "logvar": logvar,
            "code": code,
            "corrupted": corrupted,
        }

    def forward(self, views: list[Batch], encoder: Encoder) -> ObjectiveOutput:
        if len(views) != 1:
            raise ValueError(f"autoencoder needs 1 view, got {len(views)}")
        result = self.reconstruct(views[0], encoder)
        target = result["target"].float()
        per_sample = reconstruction_error(result["output"], target, self.params.loss, logits=self.bounded)
        reconstruction = per_sample.mean()
        loss = reconstruction
        metrics: dict[str, float | Tensor] = {"reconstruction": reconstruction.detach()}
        with torch.no_grad():
            metrics["mse"] = (result["prediction"] - target).square().mean()
        if result["mu"] is not None:
            kl = gaussian_kl(result["mu"], result["logvar"]).mean()
            weight = self.kl_weight_now()
            elements = target[0].numel()
            loss = reconstruction + weight * kl / elements
            metrics["kl"] = kl.detach()
            metrics["kl_weight"] = weight
        if self.mask_head is not None and result["corrupted"] is not None:
            mask_loss, mask_accuracy = self._mask_estimation(result["code"], result["corrupted"])
            loss = loss + self.params.mask_weight * mask_loss
            metrics["mask_bce"] = mask_loss.detach()
            metrics["mask_accuracy"] = mask_accuracy
        if self.training and torch.is_grad_enabled():
            self.step += 1
        return ObjectiveOutput(loss=loss, metrics=metrics)

    def _mask_estimation(self, code: Tensor, corrupted: Tensor) -> tuple[Tensor, Tensor]:
        """Binary cross-entropy of the mask head's per-column logits against the corruption mask,
        and the share of cells it classifies right (detached)."""
        logits = self.mask_head(code).float()
        truth = corrupted.float()
        loss = F.binary_cross_entropy_with_logits(logits, truth)
        with torch.no_grad():
            accuracy = ((logits > 0) == corrupted).float().mean()
        return loss, accuracy

    # -- evaluation ---------------------------------------------------------------------------

    @torch.no_grad()
    def held_out_metrics(self, batch: Batch, encoder: Encoder) -> dict[str, float]:
        """Reconstruction ``mse`` and ``l1`` per element of clean held-out inputs (latent mean for VAEs)."""
        was_training = self.training
        self.eval()
        try:
            result = self.reconstruct(batch, encoder, corrupt_input=False)
        finally:
            self.train(was_training)
        error = result["prediction"] - result["target"].float()
        return {"reconstruction_mse": float(error.square().mean()), "reconstruction_l1": float(error.abs().mean())}

    @torch.no_grad()
    def report(self, run_dir: Path, encoder: Encoder, modality: Modality) -> dict[str, Any]:
        """Reconstruction error on held-out data and, for images/spectrograms, a PNG of inputs vs reconstructions.

        The error is measured on up to ``report_samples`` held-out samples (the modality's
        held-out set, else its eval test split) with clean inputs and, for VAEs, the latent
        mean. ``mean_baseline_mse`` is the error of always predicting the held-out mean, for scale.
        The PNG (``autoencoder_reconstructions.png``) has inputs in the first row and their
        reconstructions below.
        """
        subset = held_out_subset(modality, self.params.report_samples)
        if subset is None:
            return {}
        device = next(self.parameters()).device
        squared = absolute = 0.0
        elements = 0
        targets, first = [], None
        with evaluation_mode(encoder, self):
            for batch in held_out_batches(subset, modality, device):
                result = self.reconstruct(batch, encoder, corrupt_input=False)
                target = result["target"].float()
                error = result["prediction"] - target
                squared += float(error.square().sum())
                absolute += float(error.abs().sum())
                elements += target.numel()
                targets.append(target.cpu())
                if first is None:
                    first = result
        everything = torch.cat(targets)
        baseline = float((everything - everything.mean(dim=0, keepdim=True)).square().mean())
        entry: dict[str, Any] = {
            "held_out_samples": len(subset),
            "reconstruction_mse": round(squared / elements, 6),
            "reconstruction_l1": round(absolute / elements, 6),
            "mean_baseline_mse": round(baseline, 6),
        }
        if first is not None and first["target"].dim() in (3, 4):
            path = Path(run_dir) / "autoencoder_reconstructions.png"
            entry["reconstructions_png"] = str(save_reconstruction_grid(path, first))
        return entry
