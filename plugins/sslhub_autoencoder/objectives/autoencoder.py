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
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from sslhub import Batch, BuildContext, Encoder, EncoderOutput, Modality, Objective, ObjectiveOutput, Params
from sslhub_autoencoder.corruption import corrupt
from sslhub_autoencoder.heads import (
    FrameDecoder,
    ImageDecoder,
    LatentHead,
    MLPDecoder,
    VectorToFrameDecoder,
    VectorToImageDecoder,
)
from sslhub_autoencoder.losses import gaussian_kl, reconstruction_error

#: the batch key reconstructed for each known modality.
TARGET_KEYS = {"image": "image", "audio": "features", "tabular": "vector"}


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
    noise: Literal["gaussian", "dropout"] = Field(
        "gaussian", description="denoising corruption: additive gaussian, or dropout (masking) noise"
    )
    noise_level: float = Field(
        0.2, ge=0.0, description="denoising: gaussian std in data units, or dropout probability (< 1)"
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
            if self.noise == "dropout" and self.noise_level >= 1:
                raise ValueError(f"dropout noise_level is a probability and must be < 1, got {self.noise_level}")
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
        example = modality.example_batch(2)
        self.target_key = _target_key(params, modality, context.modality_name, example)
        target = example[self.target_key]
        value_range = modality.info().get("value_range")
        self.bounded = value_range is not None and [float(v) for v in value_range] == [0.0, 1.0]
        if params.loss == "bce" and not self.bounded:
            raise ValueError(
                f"loss bce needs data in [0, 1]; the {context.modality_name or 'given'} modality does not declare "
                "value_range [0, 1] (use mse or l1)"
            )
        features = self._probe(encoder, example)
        self.decode_from = self._choose_source(params.decode_from, target, features)
        variational = params.variant == "variational"
        source = getattr(features, self.decode_from)
        self.latent = LatentHead(
            source.shape[1] if self.decode_from == "spatial" else source.shape[-1],
            params.bottleneck,
            variational=variational,
            channel_axis=1 if self.decode_from == "spatial" else -1,
        )
        self.decoder = self._build_decoder(target, source)
        # optimizer steps seen in training, for the KL warm-up; a buffer so checkpoints keep it
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    # -- construction -------------------------------------------------------------------------

    @staticmethod
    @torch.no_grad()
    def _probe(encoder: Encoder, example: Batch) -> EncoderOutput:
        was_training = encoder.training
        encoder.eval()
        try:
            return encoder(example)
        finally:
            encoder.train(was_training)

    def _choose_source(self, requested: str, target: Tensor, features: EncoderOutput) -> str:
        if requested == "auto":
            if target.dim() == 4 and features.spatial is not None:
                return "spatial"
            if target.dim() == 3 and features.tokens is not None:
                return "tokens"
            return "pooled"
        if getattr(features, requested) is None:
            raise ValueError(
                f"decode_from {requested} needs an encoder with {requested} features; this one gives "
                f"{', '.join(k for k in ('pooled', 'tokens', 'spatial') if getattr(features, k) is not None)}"
            )
        allowed = {4: ("pooled", "spatial"), 3: ("pooled", "tokens"), 2: ("pooled",)}[target.dim()]
        if requested not in allowed:
            raise ValueError(
                f"decode_from {requested} does not fit target {self.target_key!r} of shape {list(target.shape)}; "
                f"choose one of {', '.join(allowed)}"
            )
        return requested

    def _build_decoder(self, target: Tensor, source: Tensor) -> nn.Module:
        p = self.params
        if target.dim() == 4:
            channels, size = target.shape[1], (target.shape[2], target.shape[3])
            if self.decode_from == "spatial":
                return ImageDecoder(p.bottleneck, channels, tuple(source.shape[-2:]), size, width=p.decoder_width)
            return VectorToImageDecoder(p.bottleneck, channels, size, width=p.decoder_width)
        if target.dim() == 3:
            bins, length = target.shape[1], target.shape[2]
            if self.decode_from == "tokens":
                return FrameDecoder(p.bottleneck, bins, length / source.shape[1], width=p.decoder_width)
            return VectorToFrameDecoder(p.bottleneck, bins, length, width=p.decoder_width)
        return MLPDecoder(p.bottleneck, target.shape[1], p.decoder_hidden)

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
            logits for ``[0, 1]`` data), ``prediction`` (in data space), ``mu``/``logvar`` (or ``None``).
        """
        target = batch[self.target_key]
        seen = target
        if corrupt_input and self.params.variant == "denoising":
            seen = corrupt(target, self.params.noise, self.params.noise_level, (0.0, 1.0) if self.bounded else None)
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
        return {"target": target, "input": seen, "output": output, "prediction": prediction, "mu": mu, "logvar": logvar}

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
        if self.training and torch.is_grad_enabled():
            self.step += 1
        return ObjectiveOutput(loss=loss, metrics=metrics)

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
        dataset = _held_out(modality)
        if dataset is None or len(dataset) == 0:  # type: ignore[arg-type]
            return {}
        device = next(self.parameters()).device
        count = min(self.params.report_samples, len(dataset))  # type: ignore[arg-type]
        subset = torch.utils.data.Subset(dataset, range(count))
        loader = DataLoader(subset, batch_size=128, shuffle=False, collate_fn=modality.collate)
        states = (encoder.training, self.training)
        encoder.eval(), self.eval()
        squared = absolute = 0.0
        elements = 0
        targets, first = [], None
        try:
            for batch in loader:
                batch = modality.on_device({k: v.to(device) for k, v in batch.items() if k != "label"})
                result = self.reconstruct(batch, encoder, corrupt_input=False)
                target = result["target"].float()
                error = result["prediction"] - target
                squared += float(error.square().sum())
                absolute += float(error.abs().sum())
                elements += target.numel()
                targets.append(target.cpu())
                if first is None:
                    first = result
        finally:
            encoder.train(states[0]), self.train(states[1])
        everything = torch.cat(targets)
        baseline = float((everything - everything.mean(dim=0, keepdim=True)).square().mean())
        entry: dict[str, Any] = {
            "held_out_samples": count,
            "reconstruction_mse": round(squared / elements, 6),
            "reconstruction_l1": round(absolute / elements, 6),
            "mean_baseline_mse": round(baseline, 6),
        }
        if first is not None and first["target"].dim() in (3, 4):
            entry["reconstructions_png"] = str(self._save_grid(Path(run_dir), first))
        return entry

    def _save_grid(self, run_dir: Path, result: dict[str, Any]) -> Path:
        from torchvision.utils import save_image

        shown = min(8, result["target"].shape[0])
        target, prediction = result["target"][:shown].float(), result["prediction"][:shown].float()
        if target.dim() == 3:  # spectrograms [B, F, T]: one gray picture each, low frequencies at the bottom
            target, prediction = target.flip(1)[:, None], prediction.flip(1)[:, None]
            low, high = target.min(), target.max()
            target, prediction = ((x - low) / (high - low).clamp_min(1e-6) for x in (target, prediction))
        path = run_dir / "autoencoder_reconstructions.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(torch.cat([target, prediction]).clamp(0, 1).cpu(), path, nrow=shown, padding=2)
        return path


class _WithoutLabels(Dataset):
    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Batch:
        return {k: v for k, v in self.dataset[index].items() if k != "label"}


def _held_out(modality: Modality) -> Dataset | None:
    held_out = modality.held_out_dataset()
    if held_out is not None:
        return held_out
    split = modality.eval_split()
    return _WithoutLabels(split.test) if split is not None else None
