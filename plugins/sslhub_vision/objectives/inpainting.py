"""``inpainting``: hide part of each image and reconstruct it from the encoder's spatial map.

References:
    - Pathak et al., "Context Encoders: Feature Learning by Inpainting", CVPR 2016,
      https://arxiv.org/abs/1604.07379

The optional adversarial term (Context Encoders' joint loss) needs a discriminator trained
*against* the encoder and decoder. The engine has one optimizer over all objective
parameters, so the discriminator is updated here, inside :meth:`InpaintingObjective.forward`
while training, with its own Adam optimizer; its parameters never hold a gradient when the
engine's optimizer steps (the generator term is computed with them frozen), so the engine
leaves them alone. Its optimizer state rides in this module's ``state_dict`` (extra state),
so checkpoints restore it. Under DistributedDataParallel the discriminator is declared
self-updated (kept out of DDP's reduction) and its gradients are averaged across ranks before
each of its steps, so every rank keeps the same discriminator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from sslhub import (
    Batch,
    BuildContext,
    ConvDecoder,
    Encoder,
    Modality,
    Objective,
    ObjectiveOutput,
    Params,
    average_gradients,
)
from sslhub_vision.heads.discriminator import ConvDiscriminator
from sslhub_vision.masks import make_mask


class InpaintingParams(Params):
    """Parameters of the ``inpainting`` objective."""

    mask: Literal["central_block", "random_blocks", "random_regions"] = Field(
        "random_blocks", description="shape of the hidden region"
    )
    mask_fraction: float = Field(0.25, gt=0.0, lt=1.0, description="share of each image hidden")
    num_blocks: int = Field(4, ge=1, le=64, description="blocks per image for mask: random_blocks")
    fill: Literal["zero", "mean"] = Field(
        "mean", description="value of hidden pixels: 0, or the normalisation mean (0 after normalising)"
    )
    loss: Literal["l2", "l1"] = Field("l2", description="reconstruction loss on the hidden pixels")
    unmasked_weight: float = Field(0.0, ge=0.0, description="weight of the reconstruction loss on visible pixels")
    decoder_width: int = Field(32, gt=0, le=1024, description="channels of the decoder's last upsampling stage")
    adversarial_weight: float = Field(0.0, ge=0.0, description="weight of the adversarial term; 0 disables it")
    discriminator_width: int = Field(32, gt=0, le=512, description="channels of the discriminator's first layer")
    discriminator_lr: float = Field(2e-4, gt=0.0, description="learning rate of the discriminator's own Adam")


class InpaintingObjective(Objective):
    """Context-Encoders inpainting: mask after augmentation, encode, decode, loss on the hole.

    Inputs: one view ``{"image": [B, C, H, W]}`` in ``[0, 1]``. The encoder sees the image
    with the hole filled; the decoder (transposed convs from ``spatial`` ``[B, D, h, w]``)
    predicts the full image ``[B, C, H, W]``. Metrics: ``masked_l1`` (mean absolute error
    on hidden pixels) and, with the adversarial term, ``discriminator_loss`` and
    ``generator_loss``.
    """

    num_views = 1

    def __init__(self, params: InpaintingParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params = params or InpaintingParams()
        if context is None or context.encoder is None or context.modality is None:
            raise ValueError("inpainting needs the built encoder and modality (context.encoder, context.modality)")
        encoder, modality = context.encoder, context.modality
        info = modality.info()
        channels = int(info.channels or 3)
        mean = info.mean if info.mean is not None else [0.5] * channels
        self.register_buffer("fill_value", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        example = modality.example_batch(2, context.device)
        height, width = example["image"].shape[-2:]
        spatial = self._probe_spatial(encoder, example)
        self.decoder = ConvDecoder(
            spatial.shape[1], channels, tuple(spatial.shape[-2:]), (height, width), width=params.decoder_width
        )
        self.discriminator: ConvDiscriminator | None = None
        self.discriminator_optimizer: torch.optim.Optimizer | None = None
        if params.adversarial_weight > 0:
            if min(height, width) < 8:
                raise ValueError(f"the adversarial term needs images of at least 8x8, got {height}x{width}")
            self.discriminator = ConvDiscriminator(channels, params.discriminator_width)
            self.discriminator_optimizer = torch.optim.Adam(
                self.discriminator.parameters(), lr=params.discriminator_lr, betas=(0.5, 0.999)
            )

    @staticmethod
    @torch.no_grad()
    def _probe_spatial(encoder: Encoder, example: Batch) -> Tensor:
        was_training = encoder.training
        encoder.eval()
        try:
            spatial = encoder(example).spatial
        finally:
            encoder.train(was_training)
        if spatial is None:
            raise ValueError(
                f"inpainting requires an encoder with a spatial feature map; {type(encoder).__name__} "
                "returned none (use a CNN: small_cnn, or timm with a convolutional model)"
            )
        return spatial

    def corrupt(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Hide a region of each image.

        Returns:
            the corrupted images ``[B, C, H, W]`` and the mask ``[B, 1, H, W]`` (1 = hidden).
        """
        batch, _, height, width = image.shape
        p = self.params
        mask = make_mask(p.mask, batch, height, width, p.mask_fraction, image.device, num_blocks=p.num_blocks)
        mask = mask.to(image.dtype)
        fill = self.fill_value.to(image.dtype) if p.fill == "mean" else torch.zeros((), device=image.device)
        return image * (1 - mask) + fill * mask, mask

    def reconstruction_loss(self, prediction: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Mean per-pixel error over the hidden region (plus ``unmasked_weight`` x the visible one)."""
        error = (prediction - target).abs() if self.params.loss == "l1" else (prediction - target).square()
        channels = target.shape[1]
        hidden = (error * mask).sum() / (mask.sum() * channels).clamp_min(1.0)
        if self.params.unmasked_weight == 0:
            return hidden
        visible = (error * (1 - mask)).sum() / ((1 - mask).sum() * channels).clamp_min(1.0)
        return hidden + self.params.unmasked_weight * visible

    def forward(self, views: list[Batch], encoder: Encoder) -> ObjectiveOutput:
        if len(views) != 1:
            raise ValueError(f"inpainting needs 1 view, got {len(views)}")
        view = views[0]
        target = view["image"]
        corrupted, mask = self.corrupt(target)
        spatial = encoder({**view, "image": corrupted}).spatial
        if spatial is None:
            raise ValueError("inpainting requires the encoder's spatial feature map, and it returned none")
        prediction = self.decoder(spatial).to(target.dtype)
        loss = self.reconstruction_loss(prediction, target, mask)
        with torch.no_grad():
            masked_l1 = ((prediction - target).abs() * mask).sum() / (mask.sum() * target.shape[1]).clamp_min(1.0)
        metrics: dict[str, float | Tensor] = {"masked_l1": masked_l1, "reconstruction_loss": loss.detach()}
        if self.discriminator is not None and self.training:
            composite = prediction * mask + target * (1 - mask)
            metrics["discriminator_loss"] = self._update_discriminator(target.detach(), composite.detach())
            generator_loss = self._generator_loss(composite)
            metrics["generator_loss"] = generator_loss.detach()
            loss = loss + self.params.adversarial_weight * generator_loss
        return ObjectiveOutput(loss=loss, metrics=metrics)

    def self_updated_parameters(self) -> list[nn.Parameter]:
        """The discriminator's: it is stepped here, by its own optimizer."""
        return list(self.discriminator.parameters()) if self.discriminator is not None else []

    def _update_discriminator(self, real: Tensor, fake: Tensor) -> Tensor:
        """One Adam step of the discriminator on real vs inpainted images; its grads are cleared after."""
        assert self.discriminator is not None and self.discriminator_optimizer is not None
        with torch.enable_grad():
            real_logits = self.discriminator(real)
            fake_logits = self.discriminator(fake)
            loss = F.binary_cross_entropy_with_logits(
                real_logits.float(), torch.ones_like(real_logits, dtype=torch.float32)
            ) + F.binary_cross_entropy_with_logits(
                fake_logits.float(), torch.zeros_like(fake_logits, dtype=torch.float32)
            )
            self.discriminator_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(self.discriminator.parameters())
            self.discriminator_optimizer.step()
            self.discriminator_optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def _generator_loss(self, composite: Tensor) -> Tensor:
        """Non-saturating GAN loss for the inpainter; gradients reach the image, not the discriminator."""
        assert self.discriminator is not None
        parameters = list(self.discriminator.parameters())
        for parameter in parameters:
            parameter.requires_grad_(False)
        try:
            logits = self.discriminator(composite)
        finally:
            for parameter in parameters:
                parameter.requires_grad_(True)
        return F.binary_cross_entropy_with_logits(logits.float(), torch.ones_like(logits, dtype=torch.float32))

    def get_extra_state(self) -> dict[str, Any]:
        if self.discriminator_optimizer is None:
            return {}
        return {"discriminator_optimizer": self.discriminator_optimizer.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if self.discriminator_optimizer is not None and state.get("discriminator_optimizer"):
            self.discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])

    @torch.no_grad()
    def held_out_metrics(self, batch: Batch, encoder: Encoder) -> dict[str, float]:
        """``masked_l1`` and the reconstruction loss on un-augmented held-out images."""
        was_training = self.training
        self.eval()  # no discriminator step on held-out data; decoder BatchNorm in inference mode
        try:
            output = self.forward([batch], encoder)
        finally:
            self.train(was_training)
        return {"masked_l1": float(output.metrics["masked_l1"]), "reconstruction_loss": float(output.loss)}

    @torch.no_grad()
    def report(self, run_dir: Path, encoder: Encoder, modality: Modality) -> dict[str, Any]:
        """Save a picture of 8 held-out images: original, corrupted, reconstructed (one row each)."""
        dataset = modality.held_out_dataset() or modality.train_dataset()
        count = min(8, len(dataset))  # type: ignore[arg-type]
        if count == 0:
            return {}
        device = next(self.decoder.parameters()).device
        batch = modality.collate([dataset[i] for i in range(count)])
        batch = modality.on_device({k: v.to(device) for k, v in batch.items()})
        was_training = (encoder.training, self.training)
        encoder.eval(), self.eval()
        try:
            corrupted, mask = self.corrupt(batch["image"])
            prediction = self.decoder(encoder({**batch, "image": corrupted}).spatial)
        finally:
            encoder.train(was_training[0]), self.train(was_training[1])
        composite = prediction * mask + batch["image"] * (1 - mask)
        rows = torch.cat([torch.cat(list(images), dim=-1) for images in (batch["image"], corrupted, composite)], dim=-2)
        pixels = (rows.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        from PIL import Image

        path = Path(run_dir) / "inpainting_examples.png"
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)
        return {"inpainting_examples": str(path)}
