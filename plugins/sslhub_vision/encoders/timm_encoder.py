"""``timm``: any timm architecture as an image encoder (random init, or local weights).

CNNs give ``pooled`` and a ``spatial`` map (``forward_features``); vision transformers give
``pooled`` and ``tokens``, and ``patch_masking`` when they have a fixed patch grid and absolute
position embeddings (what ``mae`` needs). Which one a built encoder has is in its ``provides``.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from sslhub import BuildContext, Encoder, EncoderOutput, Params, PatchLayout
from sslhub_vision.encoders.export import ImageExportModule
from sslhub_vision.encoders.normalize import Normalize, image_facts
from sslhub_vision.encoders.pooling import SpatialPyramidPool, check_pyramid

logger = logging.getLogger("sslhub")

#: keys timm.create_model must not receive from ``model_kwargs`` (they are set here).
_RESERVED_KWARGS = {"pretrained", "num_classes", "in_chans", "pretrained_cfg_overlay"}


class TimmParams(Params):
    """Parameters of the ``timm`` encoder."""

    model: str = Field("resnet18", description="timm model name (see timm.list_models())")
    weights: Path | None = Field(
        None, description="local state-dict file to load (torch.load weights_only); never downloaded"
    )
    cifar_stem: bool = Field(
        False, description="ResNets: replace the 7x7/2 stem and max-pool by one 3x3/1 conv, for small images"
    )
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0, description="stochastic depth rate, where the model has it")
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments for timm.create_model (e.g. drop_rate)"
    )
    pool: Literal["model", "pyramid"] = Field(
        "model",
        description="pooled vector: model (timm's own head pooling) or pyramid (averages of the feature map, or "
        "of the patch-token grid of a transformer, over pyramid_levels grids: keeps the layout that "
        "reconstruction objectives such as mae learn)",
    )
    pyramid_levels: list[int] = Field(
        default_factory=lambda: [1, 2],
        min_length=1,
        description="pool: pyramid: grid sizes (1 = global); each must divide the map's or token grid's side",
    )


def patch_masking_problem(model: nn.Module) -> str | None:
    """Why ``model`` cannot encode a subset of its patches (``None``: it can; ``patch_masking``)."""
    missing = [name for name in ("patch_embed", "pos_embed", "blocks", "norm") if not hasattr(model, name)]
    if missing:
        return f"it lacks {', '.join(missing)} (a timm VisionTransformer has them)"
    if getattr(model, "dynamic_img_size", False):
        return "it has a dynamic image size; do not set dynamic_img_size in model_kwargs"
    if getattr(model.patch_embed, "flatten", True) is False:
        return "its patch embedding does not return [B, N, D] tokens (flatten=False)"
    if model.pos_embed is None:
        return "it has no absolute position embeddings (pos_embed)"
    patch = model.patch_embed.patch_size
    if isinstance(patch, (tuple, list)) and patch[0] != patch[1]:
        return f"its patches are not square ({tuple(patch)})"
    return None


def unknown_model_message(name: str) -> str:
    """A ValueError message for a name timm does not know, with the closest known names."""
    import timm

    names = timm.list_models()
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    close += [n for n in timm.list_models(f"*{name}*")[:5] if n not in close]
    hint = f"; close matches: {', '.join(close[:8])}" if close else "; see timm.list_models() for the names"
    return f"unknown timm model {name!r}{hint}"


def apply_cifar_stem(model: nn.Module, in_channels: int) -> None:
    """Swap a ResNet stem for a 3x3 stride-1 conv without max-pool (CIFAR-style ResNets).

    Raises:
        ValueError: the model has no ResNet-style ``conv1``/``bn1``/``maxpool``.
    """
    if not all(hasattr(model, attr) for attr in ("conv1", "bn1", "maxpool")):
        raise ValueError(
            f"cifar_stem applies to ResNet-style models with conv1/bn1/maxpool; {type(model).__name__} has none. "
            "Set cifar_stem: false (vision transformers take img_size through the modality's image_size)."
        )
    out_channels = model.bn1.num_features
    model.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()


def _read_state_dict(path: Path) -> dict:
    """The state dict saved in ``path``, unwrapped and with ``module.``/``model.`` prefixes and the
    normalisation buffers (which the modality's settings rebuild) removed."""
    if not path.is_file():
        raise ValueError(f"timm encoder weights file {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    cleaned = {}
    for key, value in state.items():
        for prefix in ("module.", "model."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        if not key.startswith("normalize."):
            cleaned[key] = value
    return cleaned


def load_local_weights(model: nn.Module, path: Path) -> None:
    """Load a local state dict (plain, under ``state_dict``/``model``, or this encoder's own keys)."""
    result = model.load_state_dict(_read_state_dict(path), strict=False)
    if result.missing_keys:
        shown = ", ".join(result.missing_keys[:5])
        raise ValueError(
            f"weights file {path} lacks {len(result.missing_keys)} parameters of the model (e.g. {shown}); "
            "is it for a different model or cifar_stem setting?"
        )
    if result.unexpected_keys:
        logger.warning(
            "ignored %d unexpected keys in %s (e.g. %s)",
            len(result.unexpected_keys),
            path,
            ", ".join(result.unexpected_keys[:5]),
        )


class TimmEncoder(Encoder):
    """A timm model (``pretrained=False`` always) with the modality's normalisation in front.

    Shapes:
        input ``image``: float ``[B, C, S, S]`` in ``[0, 1]``.
        ``pooled``: ``[B, D]`` from the model's own global pooling (pre-logits); with ``pool:
        pyramid`` ``[B, D' * sum(level**2)]``, the map's (or patch-token grid's) pyramid averages.
        ``spatial`` (CNNs): ``[B, D', h, w]`` from ``forward_features``.
        ``tokens`` (transformers): ``[B, N, D]`` from ``forward_features``, prefix tokens included.
    """

    input_names = ("image",)

    def __init__(self, params: TimmParams | None = None, context: BuildContext | None = None):
        super().__init__()
        import timm

        self.params = params = params or TimmParams()
        if not timm.is_model(params.model):
            raise ValueError(unknown_model_message(params.model))
        reserved = _RESERVED_KWARGS & set(params.model_kwargs)
        if reserved:
            raise ValueError(f"model_kwargs may not set {sorted(reserved)}; they are fixed by the timm encoder")
        channels, image_size, mean, std = image_facts(context)
        self.normalize = Normalize(mean, std)
        kwargs: dict[str, Any] = {"pretrained": False, "num_classes": 0, "in_chans": channels, **params.model_kwargs}
        if params.drop_path_rate:
            kwargs["drop_path_rate"] = params.drop_path_rate
        try:
            # transformers need the input size for their position embeddings; CNNs reject it
            self.model = timm.create_model(params.model, img_size=image_size, **kwargs)
            kwargs["img_size"] = image_size
        except TypeError:
            self.model = timm.create_model(params.model, **kwargs)
        #: what timm.create_model was given besides the name (the native export repeats it)
        self.create_kwargs = {k: v for k, v in kwargs.items() if k != "pretrained"}
        self.mean, self.std, self.image_size = list(mean), list(std), image_size
        if params.cifar_stem:
            apply_cifar_stem(self.model, channels)
        if params.weights is not None:
            load_local_weights(self.model, params.weights.expanduser())
        self._probe(channels, image_size)

    @torch.no_grad()
    def _probe(self, channels: int, image_size: int) -> None:
        """Run a tiny batch once to learn the feature layout and sizes."""
        was_training = self.model.training
        self.model.eval()
        features = self.model.forward_features(torch.zeros(2, channels, image_size, image_size))
        num_features = getattr(self.model, "num_features", None)
        if features.ndim == 4:
            # most CNNs are NCHW; a few timm models (Swin, some MLPs) return NHWC
            self.layout = "nchw" if features.shape[1] == num_features else "nhwc"
            self.provides = frozenset({"pooled", "spatial"})
        elif features.ndim == 3:
            self.layout = "tokens"
            masking = {"patch_masking"} if patch_masking_problem(self.model) is None else set()
            self.provides = frozenset({"pooled", "tokens", *masking})
        else:
            raise ValueError(
                f"timm model {self.params.model!r} returned features of shape {list(features.shape)}; "
                "expected [B, C, h, w] or [B, N, D]"
            )
        self.pyramid: SpatialPyramidPool | None = None
        if self.params.pool == "pyramid":
            self.pyramid = SpatialPyramidPool(self.params.pyramid_levels)
            feature_map = self._feature_map(features)
            check_pyramid(self.params.pyramid_levels, *feature_map.shape[-2:], f"timm {self.params.model}")
        pooled = self._pool(features)
        self.feature_dim = int(pooled.shape[-1])
        self.model.train(was_training)

    def _feature_map(self, features: Tensor) -> Tensor:
        """``[B, D, h, w]``: a CNN's map, or a transformer's patch tokens (prefix tokens dropped) on their grid."""
        if self.layout == "nchw":
            return features
        if self.layout == "nhwc":
            return features.permute(0, 3, 1, 2)
        grid = getattr(getattr(self.model, "patch_embed", None), "grid_size", None)
        prefix = int(getattr(self.model, "num_prefix_tokens", 0))
        if grid is None:
            raise ValueError(f"pool: pyramid needs a transformer with a fixed patch grid; {self.params.model} has none")
        patches = features[:, prefix:]
        return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], int(grid[0]), int(grid[1]))

    def _pool(self, features: Tensor) -> Tensor:
        """The ``pooled`` vector: timm's head pooling, or the spatial pyramid (``pool: pyramid``)."""
        if self.pyramid is None:
            return self.model.forward_head(features, pre_logits=True)
        return self.pyramid(self._feature_map(features))

    # ----------------------------------------------------------------- patch_masking
    def _vit(self) -> nn.Module:
        problem = patch_masking_problem(self.model) if self.layout == "tokens" else "it is not a transformer"
        if problem is not None:
            raise ValueError(f"timm model {self.params.model!r} cannot encode a subset of patches: {problem}")
        return self.model

    def patch_layout(self) -> PatchLayout:
        vit = self._vit()
        patch = vit.patch_embed.patch_size
        grid = vit.patch_embed.grid_size
        return PatchLayout(
            patch_size=int(patch[0] if isinstance(patch, (tuple, list)) else patch),
            grid=(int(grid[0]), int(grid[1])),
            prefix_tokens=int(getattr(vit, "num_prefix_tokens", 1)),
            dim=int(vit.embed_dim),
        )

    def encode_patches(self, image: Tensor, ids_keep: Tensor) -> Tensor:
        """The ViT on the kept patches only: ``[B, P + K, D]`` (see :meth:`sslhub.Encoder.encode_patches`)."""
        vit = self._vit()
        x = vit.patch_embed(self.normalize(image))  # [B, N, D]
        prefix_count = int(getattr(vit, "num_prefix_tokens", 0))
        pos = vit.pos_embed.to(x.dtype)
        if getattr(vit, "no_embed_class", False):
            prefix_pos, patch_pos = None, pos
        else:
            prefix_pos, patch_pos = pos[:, :prefix_count], pos[:, prefix_count:]
        x = x + patch_pos
        x = x.gather(1, ids_keep[..., None].expand(-1, -1, x.shape[-1]))
        prefix = [
            token.to(x.dtype).expand(x.shape[0], -1, -1)
            for token in (getattr(vit, "cls_token", None), getattr(vit, "reg_token", None))
            if token is not None
        ]
        if prefix:
            prefix_tokens = torch.cat(prefix, dim=1)
            if prefix_pos is not None and prefix_pos.shape[1] == prefix_tokens.shape[1]:
                prefix_tokens = prefix_tokens + prefix_pos
            x = torch.cat([prefix_tokens, x], dim=1)
        for name in ("pos_drop", "norm_pre"):
            module = getattr(vit, name, None)
            if module is not None:
                x = module(x)
        return vit.norm(vit.blocks(x))

    @torch.no_grad()
    def set_patch_positions(self, codes: Tensor, trainable: bool) -> None:
        """``codes`` ``[N, D]`` into ``pos_embed``'s patch slots, zeros in its prefix slots."""
        pos_embed = self._vit().pos_embed
        start = pos_embed.shape[1] - codes.shape[0]
        if start < 0:
            raise ValueError(f"the ViT's pos_embed has {pos_embed.shape[1]} positions for {codes.shape[0]} patches")
        pos_embed[:, start:] = codes.to(pos_embed.dtype)
        pos_embed[:, :start] = 0.0
        pos_embed.requires_grad_(trainable)

    def forward(self, batch: Mapping[str, Tensor]) -> EncoderOutput:
        features = self.model.forward_features(self.normalize(batch["image"]))
        pooled = self._pool(features)
        if self.layout == "tokens":
            return EncoderOutput(pooled=pooled, tokens=features)
        spatial = features.permute(0, 3, 1, 2) if self.layout == "nhwc" else features
        return EncoderOutput(pooled=pooled, spatial=spatial)

    def export_module(self) -> nn.Module:
        """``image [B, C, S, S] in [0, 1] -> pooled [B, D]``, for ``torch.onnx.export``."""
        return ImageExportModule(self)

    def export_native(self, directory: Path, modality: Any) -> dict[str, str]:
        """``model.safetensors`` that timm loads itself, and ``timm_config.json`` with the arguments.

        ``timm.create_model(model, pretrained=True, pretrained_cfg_overlay=dict(file=".../model.safetensors",
        **pretrained_cfg), **kwargs)`` (names as in the json) builds this encoder's network with
        the trained weights; on images normalised with the recorded mean and std, its output
        (``forward_head(forward_features(x), pre_logits=True)``, what ``model(x)`` gives with
        ``num_classes=0``) is the ``pooled`` vector of ``pool: model``. A ``cifar_stem`` network
        is not one timm builds, so it gets no native export.
        """
        if self.params.cifar_stem:
            logger.info("timm encoder with cifar_stem: timm.create_model cannot build that stem; no native export")
            return {}
        from safetensors.torch import save_file

        weights = {key: value.detach().cpu().contiguous() for key, value in self.model.state_dict().items()}
        save_file(weights, str(directory / "model.safetensors"))
        channels = int(self.create_kwargs.get("in_chans", 3))
        config = {
            "library": "timm",
            "model": self.params.model,
            "kwargs": self.create_kwargs,
            "pretrained_cfg": {
                "mean": self.mean,
                "std": self.std,
                "input_size": [channels, self.image_size, self.image_size],
                # sslhub's own resize: shorter side to the size (bilinear), then a center crop
                "interpolation": "bilinear",
                "crop_pct": 1.0,
                "crop_mode": "center",
                "num_classes": 0,
            },
            "input": "float images [B, C, S, S] in [0, 1], normalised with pretrained_cfg mean and std",
            "output": "model(x): pooled pre-logits features [B, D]"
            + (" (sslhub's pool: pyramid differs: it pools the feature map itself)" if self.pyramid else ""),
        }
        (directory / "timm_config.json").write_text(json.dumps(config, indent=2) + "\n")
        return {
            "model.safetensors": "timm weights: timm.create_model(model, pretrained=True, "
            "pretrained_cfg_overlay=dict(file=PATH, **pretrained_cfg), **kwargs)",
            "timm_config.json": "the model name, kwargs and pretrained_cfg for timm.create_model",
        }
