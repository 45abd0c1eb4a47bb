"""``mae``: masked autoencoder for timm Vision Transformers.

Most patches of each image are hidden (``mask_ratio`` 0.75); the ViT encodes only the
visible ones (its patch embedding, position embedding, prefix tokens, blocks and final norm
are used directly, so hidden patches never enter the encoder); a light transformer decoder
gets the encoded visible patches plus a learned mask token at every hidden position and
predicts the pixels of every patch; the loss is the mean squared error on hidden patches,
optionally against per-patch normalised pixels (``norm_pix_loss``).

Encoder requirement: the ``timm`` encoder of the vision plugin with a VisionTransformer-style
model (``vit_*``, ``deit_*``): it must expose the timm model as ``encoder.model`` with
``patch_embed``, ``pos_embed``, ``blocks`` and ``norm``, and a fixed image size (pass the
patch size through ``model_kwargs: {patch_size: 4}``; the image size comes from the
modality). Targets are the ``[0, 1]`` pixels.

References:
    - He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022,
      https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from sslhub import Batch, BuildContext, Encoder, Modality, Objective, ObjectiveOutput, Params
from sslhub_autoencoder.patches import patchify, random_patch_mask, sincos_positions_2d, unpatchify


class MAEParams(Params):
    """Parameters of the ``mae`` objective."""

    mask_ratio: float = Field(0.75, gt=0.0, lt=1.0, description="share of patches hidden from the encoder")
    decoder_dim: int = Field(128, gt=0, description="width of the decoder transformer (divisible by 4 and heads)")
    decoder_depth: int = Field(2, ge=1, le=24, description="decoder transformer blocks")
    decoder_heads: int = Field(4, ge=1, description="decoder attention heads")
    decoder_mlp_ratio: float = Field(4.0, gt=0.0, description="decoder feed-forward width / decoder_dim")
    norm_pix_loss: bool = Field(False, description="targets are each patch's pixels standardised by its own mean/std")
    norm_pix_eps: float = Field(
        1e-6,
        gt=0.0,
        description="norm_pix_loss: added to each patch's pixel variance before dividing; a floor such as 0.01 "
        "keeps nearly flat patches (plain background) from being stretched to unit variance",
    )
    min_patch_range: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="hidden patches whose pixel range (max - min of the [0, 1] pixels) is below this are left out "
        "of the loss; 0 scores every hidden patch, 0.1 skips plain background so the loss is spent on the content",
    )
    encoder_positions: Literal["learned", "sincos"] = Field(
        "learned",
        description="position embedding of the ViT: learned (as the encoder was built) or sincos (fixed 2-D "
        "sine-cosine codes written into it and frozen, as in the MAE paper)",
    )
    report_samples: int = Field(512, ge=1, description="held-out images used for the report's masked error")

    @model_validator(mode="after")
    def _check(self) -> MAEParams:
        if self.decoder_dim % self.decoder_heads:
            raise ValueError(f"decoder_heads ({self.decoder_heads}) must divide decoder_dim ({self.decoder_dim})")
        if self.decoder_dim % 4:
            raise ValueError(f"decoder_dim must be divisible by 4 (2-D sine-cosine positions), got {self.decoder_dim}")
        return self


def check_patch_masking(encoder: Encoder) -> None:
    """``encoder`` declares ``patch_masking`` (validation checks the registration; this, the built model).

    Raises:
        ValueError: naming the encoder and how to configure a fitting one.
    """
    if "patch_masking" not in encoder.provides:
        raise ValueError(
            f"mae needs a timm VisionTransformer encoder (encoder: {{name: timm, model: vit_tiny_patch16_224, "
            f"model_kwargs: {{patch_size: 4}}}}); {type(encoder).__name__} does not declare provides 'patch_masking'"
        )


def freeze_sincos_positions(encoder: Encoder, grid: tuple[int, int], dim: int) -> None:
    """Fixed 2-D sine-cosine codes in the encoder's patch position embedding, frozen.

    MAE uses fixed codes in the encoder (He et al. 2022, section 4 / appendix A.1): learned
    embeddings start near zero (std 0.02) and take many steps to tell the encoder where its
    few visible patches lie, which a short run does not have. Prefix tokens (class token) get
    zeros. The codes live in the encoder's position embedding, so a saved or exported encoder
    keeps them.
    """
    encoder.set_patch_positions(sincos_positions_2d(grid[0], grid[1], dim), trainable=False)


class MAEDecoder(nn.Module):
    """Light transformer decoder: visible tokens + mask tokens -> pixels of every patch.

    Shapes:
        visible: ``[B, P + K, D_enc]`` (``P`` prefix tokens, ``K`` visible patches, shuffled order).
        ids_restore: ``[B, N]``.
        returns: ``[B, N, patch_pixels]``.
    """

    def __init__(
        self,
        encoder_dim: int,
        grid: tuple[int, int],
        prefix_tokens: int,
        patch_pixels: int,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        self.prefix_tokens = prefix_tokens
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.register_buffer("positions", sincos_positions_2d(grid[0], grid[1], dim)[None], persistent=False)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim, heads, int(dim * mlp_ratio), dropout=0.0, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.predict = nn.Linear(dim, patch_pixels)

    def forward(self, visible: Tensor, ids_restore: Tensor) -> Tensor:
        x = self.embed(visible)
        prefix, patches = x[:, : self.prefix_tokens], x[:, self.prefix_tokens :]
        batch, total = ids_restore.shape
        masks = self.mask_token.to(x.dtype).expand(batch, total - patches.shape[1], -1)
        patches = torch.cat([patches, masks], dim=1)
        # back to the original patch order
        patches = patches.gather(1, ids_restore[..., None].expand(-1, -1, patches.shape[-1]))
        x = torch.cat([prefix, patches + self.positions.to(x.dtype)], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.predict(self.norm(x))[:, self.prefix_tokens :]


class MAEObjective(Objective):
    """Masked autoencoder on a timm ViT: encode visible patches, decode all, loss on hidden ones.

    Inputs: one view ``{"image": [B, C, H, W]}`` in ``[0, 1]``. Metrics: ``masked_mse``
    (error on hidden patches, in the loss's target space) and ``visible_patches``.
    """

    num_views = 1

    def __init__(self, params: MAEParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params = params or MAEParams()
        if context is None or context.encoder is None or context.modality is None:
            raise ValueError("mae needs the built encoder and modality (context.encoder, context.modality)")
        check_patch_masking(context.encoder)
        layout = context.encoder.patch_layout()
        example = context.modality.example_batch(2)["image"]
        self.channels, self.height, self.width = example.shape[1:]
        self.patch_size = layout.patch_size
        self.grid = (self.height // self.patch_size, self.width // self.patch_size)
        num_patches = self.grid[0] * self.grid[1]
        if layout.grid != self.grid:
            raise ValueError(
                f"the ViT expects a {layout.grid} patch grid, the images give {self.grid}; "
                "build it for the modality's image_size"
            )
        random_patch_mask(1, num_patches, params.mask_ratio, "cpu")  # fails early on a ratio leaving nothing
        self.prefix_tokens = layout.prefix_tokens
        if params.encoder_positions == "sincos":
            freeze_sincos_positions(context.encoder, self.grid, layout.dim)
        self.decoder = MAEDecoder(
            layout.dim,
            self.grid,
            self.prefix_tokens,
            self.patch_size**2 * self.channels,
            params.decoder_dim,
            params.decoder_depth,
            params.decoder_heads,
            params.decoder_mlp_ratio,
        )

    @staticmethod
    def encode_visible(encoder: Encoder, image: Tensor, ids_keep: Tensor) -> Tensor:
        """Run the encoder on the visible patches only (its ``patch_masking`` capability).

        Args:
            encoder: a ``patch_masking`` encoder (timm ViT); it normalises ``image`` itself.
            image: ``[B, C, H, W]`` in ``[0, 1]``.
            ids_keep: ``[B, K]`` indices of visible patches.

        Returns:
            ``[B, P + K, D]`` encoded prefix tokens and visible patches.
        """
        return encoder.encode_patches(image, ids_keep)

    def targets(self, image: Tensor) -> Tensor:
        """Pixels per patch ``[B, N, p*p*C]``, standardised per patch with ``norm_pix_loss``."""
        target = patchify(image.float(), self.patch_size)
        if self.params.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + self.params.norm_pix_eps).sqrt()
        return target

    def loss_weights(self, image: Tensor, mask: Tensor) -> Tensor:
        """``[B, N]`` float: 1 at the hidden patches the loss scores, 0 elsewhere.

        With ``min_patch_range`` a hidden patch of (nearly) one colour is not scored: on images that
        are mostly plain background (letters, digits, sketches) a decoder that paints every hidden
        patch the background colour already earns most of the available loss, so the encoder is
        hardly pushed to learn the shapes.
        """
        weights = mask.float()
        if self.params.min_patch_range > 0:
            pixels = patchify(image.float(), self.patch_size)
            content = (pixels.amax(dim=-1) - pixels.amin(dim=-1)) >= self.params.min_patch_range
            weights = weights * content.float()
        return weights

    def masked_error(self, image: Tensor, prediction: Tensor, mask: Tensor) -> Tensor:
        """Mean squared error over the scored hidden patches (a scalar; 0 when none is scored)."""
        error = (prediction - self.targets(image)).square().mean(dim=-1)  # [B, N]
        weights = self.loss_weights(image, mask)
        return (error * weights).sum() / weights.sum().clamp_min(1.0)

    def predict(self, image: Tensor, encoder: Encoder) -> tuple[Tensor, Tensor]:
        """Mask, encode visible patches, decode: ``(prediction [B, N, p*p*C], mask [B, N] bool)``."""
        num_patches = self.grid[0] * self.grid[1]
        ids_keep, ids_restore, mask = random_patch_mask(
            image.shape[0], num_patches, self.params.mask_ratio, image.device
        )
        encoded = self.encode_visible(encoder, image, ids_keep)
        return self.decoder(encoded, ids_restore).float(), mask

    def forward(self, views: list[Batch], encoder: Encoder) -> ObjectiveOutput:
        if len(views) != 1:
            raise ValueError(f"mae needs 1 view, got {len(views)}")
        image = views[0]["image"]
        prediction, mask = self.predict(image, encoder)
        loss = self.masked_error(image, prediction, mask)
        return ObjectiveOutput(
            loss=loss,
            # A tensor, not a float: converting here would wait for the device at every step.
            metrics={"masked_mse": loss.detach(), "visible_patches": (~mask[0]).sum().float()},
        )

    @torch.no_grad()
    def held_out_metrics(self, batch: Batch, encoder: Encoder) -> dict[str, float]:
        """``masked_mse`` on held-out images (fresh random masks)."""
        return {"masked_mse": float(self.forward([batch], encoder).loss)}

    @torch.no_grad()
    def report(self, run_dir: Path, encoder: Encoder, modality: Modality) -> dict[str, Any]:
        """Masked-patch error on held-out images and ``mae_reconstructions.png``: originals,
        masked inputs, and reconstructions with the visible patches pasted back (one row each)."""
        dataset = modality.held_out_dataset()
        if dataset is None:
            split = modality.eval_split()
            dataset = split.test if split is not None else None
        if dataset is None or len(dataset) == 0:  # type: ignore[arg-type]
            return {}
        device = next(self.decoder.parameters()).device
        count = min(self.params.report_samples, len(dataset))  # type: ignore[arg-type]
        states = (encoder.training, self.training)
        encoder.eval(), self.eval()
        total, batches, first = 0.0, 0, None
        try:
            for start in range(0, count, 128):
                samples = [dataset[i] for i in range(start, min(count, start + 128))]
                batch = modality.collate([{k: v for k, v in s.items() if k != "label"} for s in samples])
                batch = modality.on_device({k: v.to(device) for k, v in batch.items()})
                image = batch["image"]
                prediction, mask = self.predict(image, encoder)
                total += float(self.masked_error(image, prediction, mask)) * image.shape[0]
                batches += image.shape[0]
                if first is None:
                    first = (image[:8], prediction[:8], mask[:8])
        finally:
            encoder.train(states[0]), self.train(states[1])
        entry: dict[str, Any] = {"held_out_samples": batches, "masked_mse": round(total / max(batches, 1), 6)}
        if first is not None:
            entry["reconstructions_png"] = str(self._save_grid(Path(run_dir), *first))
        return entry

    def _save_grid(self, run_dir: Path, image: Tensor, prediction: Tensor, mask: Tensor) -> Path:
        from torchvision.utils import save_image

        target = patchify(image.float(), self.patch_size)
        if self.params.norm_pix_loss:  # back to pixel space with each patch's own statistics
            mean = target.mean(dim=-1, keepdim=True)
            std = (target.var(dim=-1, keepdim=True) + self.params.norm_pix_eps).sqrt()
            prediction = prediction * std + mean
        hidden = mask[..., None].float()
        masked = unpatchify(
            target * (1 - hidden) + 0.5 * hidden, self.patch_size, self.channels, self.height, self.width
        )
        pasted = unpatchify(
            prediction * hidden + target * (1 - hidden), self.patch_size, self.channels, self.height, self.width
        )
        path = run_dir / "mae_reconstructions.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(torch.cat([image.float(), masked, pasted]).clamp(0, 1).cpu(), path, nrow=image.shape[0], padding=2)
        return path
