"""``vq_vae``: an autoencoder whose code is a grid of discrete codebook entries.

The encoder's features are projected to ``code_dim`` channels at every position (the
spatial map of an image encoder, the frames of an audio encoder, or the pooled vector),
each position is replaced by its nearest codebook entry (:class:`VectorQuantizer`, EMA
codebook with dead-code restarts), and a decoder reconstructs the input from the codes::

    loss = reconstruction(decoder(quantize(z)), x) + beta * mean ||z - sg(e)||^2

with the straight-through gradient through the quantiser and ``beta`` the commitment cost
(0.25). Targets follow the ``autoencoder`` objective: ``image`` for images (``[0, 1]``, so a
sigmoid output and ``bce`` allowed), ``features`` (log-mel) for audio, ``vector`` for tables.

Metrics: ``reconstruction``, ``commitment``, ``codebook_perplexity`` (``exp`` of the entropy of
the batch's code histogram: 1 means collapse, ``codebook_size`` uniform use) and
``codebook_usage`` (share of codes the batch used). The report adds the same on held-out data,
the codebook's dead-code count, a picture of inputs above reconstructions
(``vq_vae_reconstructions.png``) and, with ``export_tokenizer``, ``vq_tokenizer.onnx``: the
encoder plus the codebook lookup, mapping inputs to integer codes, checked in onnxruntime.

References:
    - van den Oord et al., "Neural Discrete Representation Learning", NeurIPS 2017,
      https://arxiv.org/abs/1711.00937
    - Razavi et al., "Generating Diverse High-Fidelity Images with VQ-VAE-2", NeurIPS 2019
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from sslhub import Batch, BuildContext, Encoder, Modality, Objective, ObjectiveOutput, Params
from sslhub_autoencoder.losses import reconstruction_error
from sslhub_autoencoder.quantizer import VectorQuantizer, codebook_perplexity
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


class VQVAEParams(Params):
    """Parameters of the ``vq_vae`` objective."""

    codebook_size: int = Field(512, ge=2, description="number of codes K")
    code_dim: int = Field(64, ge=1, description="size of each code vector")
    commitment_cost: float = Field(0.25, ge=0.0, description="beta, weight of ||z - sg(e)||^2")
    decay: float = Field(0.99, ge=0.0, lt=1.0, description="EMA decay of the codebook statistics")
    dead_code_threshold: float = Field(
        1.0, ge=0.0, description="a code whose moving assignment count falls below this is restarted at a batch vector"
    )
    loss: Literal["mse", "l1", "bce"] = Field("mse", description="reconstruction loss; bce only for data in [0, 1]")
    decode_from: Literal["auto", "pooled", "spatial", "tokens"] = Field(
        "auto", description="features quantised: auto takes spatial for images, tokens for spectrograms, else pooled"
    )
    target: str | None = Field(None, description="batch key to reconstruct; default by modality")
    decoder_width: int = Field(32, gt=0, le=1024, description="channels of the conv decoders' last stage")
    decoder_hidden: list[int] = Field(default_factory=lambda: [128], description="MLP decoder hidden sizes (vectors)")
    report_samples: int = Field(512, ge=1, description="held-out samples for the report's figures")
    export_tokenizer: bool = Field(
        True,
        description="write vq_tokenizer.onnx (inputs -> integer codes) at the end of the run, checked in onnxruntime",
    )


class VQVAEObjective(Objective):
    """VQ-VAE: quantise the encoder's features with an EMA codebook and decode them back."""

    num_views = 1

    def __init__(self, params: VQVAEParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params = params or VQVAEParams()
        if context is None or not isinstance(context.encoder, Encoder) or context.modality is None:
            raise ValueError("vq_vae needs one built encoder and the modality (context.encoder, context.modality)")
        modality, encoder = context.modality, context.encoder
        example = modality.example_batch(2, context.device)
        self.target_key = params.target or TARGET_KEYS.get(context.modality_name, "")
        if self.target_key not in example or not example[self.target_key].is_floating_point():
            raise ValueError(
                f"vq_vae reconstructs a float batch key; {self.target_key or '(none)'!r} is not one of the modality's "
                f"(keys: {sorted(example)}); set `target:`"
            )
        value_range = modality.info().value_range
        self.bounded = value_range is not None and [float(v) for v in value_range] == [0.0, 1.0]
        if params.loss == "bce" and not self.bounded:
            raise ValueError("loss bce needs data in [0, 1]: this modality does not declare value_range [0, 1]")
        target = example[self.target_key]
        features = probe_encoder(encoder, example)
        self.decode_from = choose_source(params.decode_from, target, features, self.target_key)
        source = getattr(features, self.decode_from)
        self.channel_axis = 1 if self.decode_from == "spatial" else -1
        self.project = nn.Linear(source.shape[self.channel_axis], params.code_dim)
        self.quantizer = VectorQuantizer(
            params.codebook_size, params.code_dim, params.decay, params.dead_code_threshold
        )
        self.decoder = build_decoder(
            params.code_dim, self.decode_from, target, source, params.decoder_width, params.decoder_hidden
        )

    def encode(self, batch: Batch, encoder: Encoder) -> Tensor:
        """Pre-quantisation vectors, channels last: ``[B, h, w, D]``, ``[B, T', D]`` or ``[B, D]``."""
        features = getattr(encoder(batch), self.decode_from)
        if features is None:
            raise ValueError(f"vq_vae quantises the encoder's {self.decode_from} features, and it returned none")
        if self.channel_axis == 1:
            features = features.movedim(1, -1)
        return self.project(features)

    def reconstruct(self, batch: Batch, encoder: Encoder) -> dict[str, Tensor]:
        """``target``, ``output`` (raw decoder values), ``prediction``, ``codes``, ``commitment``, ``counts``."""
        target = batch[self.target_key]
        result = self.quantizer(self.encode(batch, encoder))
        quantized = result.quantized.movedim(-1, 1) if self.channel_axis == 1 else result.quantized
        output = (self.decoder(quantized, target.shape[-1]) if target.dim() == 3 else self.decoder(quantized)).float()
        prediction = output.sigmoid() if self.bounded else output
        return {
            "target": target.float(),
            "output": output,
            "prediction": prediction,
            "codes": result.codes,
            "commitment": result.commitment,
            "counts": result.counts,
        }

    def forward(self, views: list[Batch], encoder: Encoder) -> ObjectiveOutput:
        if len(views) != 1:
            raise ValueError(f"vq_vae needs 1 view, got {len(views)}")
        result = self.reconstruct(views[0], encoder)
        reconstruction = reconstruction_error(
            result["output"], result["target"], self.params.loss, logits=self.bounded
        ).mean()
        loss = reconstruction + self.params.commitment_cost * result["commitment"]
        counts = result["counts"]
        metrics: dict[str, float | Tensor] = {
            "reconstruction": reconstruction.detach(),
            "commitment": result["commitment"].detach(),
            "codebook_perplexity": codebook_perplexity(counts),
            "codebook_usage": (counts > 0).float().mean(),
        }
        return ObjectiveOutput(loss=loss, metrics=metrics)

    @torch.no_grad()
    def held_out_metrics(self, batch: Batch, encoder: Encoder) -> dict[str, float]:
        """Reconstruction mse and codebook perplexity/usage on one held-out batch (codebook untouched)."""
        with evaluation_mode(self):
            result = self.reconstruct(batch, encoder)
        counts = result["counts"]
        return {
            "reconstruction_mse": float((result["prediction"] - result["target"]).square().mean()),
            "codebook_perplexity": float(codebook_perplexity(counts)),
            "codebook_usage": float((counts > 0).float().mean()),
        }

    def export_models(self, out_dir: Path, encoder: Encoder, modality: Modality) -> dict[str, Any]:
        """``vq_tokenizer.onnx`` (inputs -> integer codes) for ``sslhub export``, as the run's end writes it."""
        if not self.params.export_tokenizer:
            return {}
        from sslhub_autoencoder.vq_export import export_vq_tokenizer

        result = export_vq_tokenizer(self, encoder, modality, Path(out_dir) / "vq_tokenizer.onnx")
        if "error" not in result:
            agree = "codes agree with PyTorch" if result["passed"] else "codes DIFFER from PyTorch"
            result["summary"] = f"VQ tokenizer {result['path']}: {agree} (ties aside)"
        return {"tokenizer": result}

    @torch.no_grad()
    def report(self, run_dir: Path, encoder: Encoder, modality: Modality) -> dict[str, Any]:
        """Held-out reconstruction error and codebook use, a reconstruction picture, the tokenizer export."""
        subset = held_out_subset(modality, self.params.report_samples)
        if subset is None:
            return {}
        device = next(self.parameters()).device
        squared, elements, first = 0.0, 0, None
        counts = torch.zeros(self.params.codebook_size, device=device)
        with evaluation_mode(encoder, self):
            for batch in held_out_batches(subset, modality, device):
                result = self.reconstruct(batch, encoder)
                squared += float((result["prediction"] - result["target"]).square().sum())
                elements += result["target"].numel()
                counts += result["counts"]
                first = first or result
        entry: dict[str, Any] = {
            "held_out_samples": len(subset),
            "reconstruction_mse": round(squared / elements, 6),
            "codebook_size": self.params.codebook_size,
            "codebook_perplexity": round(float(codebook_perplexity(counts)), 3),
            "codebook_usage": round(float((counts > 0).float().mean()), 4),
            "dead_codes": int((self.quantizer.ema_count < self.params.dead_code_threshold).sum()),
        }
        if first is not None and first["target"].dim() in (3, 4):
            entry["reconstructions_png"] = str(
                save_reconstruction_grid(Path(run_dir) / "vq_vae_reconstructions.png", first)
            )
        if self.params.export_tokenizer:
            from sslhub_autoencoder.vq_export import export_vq_tokenizer

            entry["tokenizer"] = export_vq_tokenizer(self, encoder, modality, Path(run_dir) / "vq_tokenizer.onnx")
        return entry
