"""The classifier a fine-tune trains (encoder + linear head) and its optimizer parameter groups.

Layer-wise learning-rate decay gives the encoder's early layers smaller steps than its late
ones (they hold the most general features). Blocks are found by their parameter names:
``blocks.3.`` (timm ViT), ``encoder.layer.3.`` (BERT-like transformers), ``layers.3.`` or
``h.3.`` (others); parameters before the first block (patch/token embeddings, positions, the
class token) are layer 0, those after the last (final norm) layer ``L + 1``.

References:
    Clark et al. ELECTRA, 2020 (layer-wise decay); Bao et al. BEiT, 2021 (for ViTs).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from sslhub.components import Encoder
from sslhub.errors import SSLHubError
from sslhub.optim import LARS, OPTIMIZER_OPTIONS

#: a numbered block of a transformer: ``...blocks.N.``, ``...layer.N.``, ``...layers.N.``, ``...h.N.``
BLOCK_PATTERN = re.compile(r"(?:^|\.)(?:blocks|block|layers|layer|h)\.(\d+)(?:\.|$)")


class Classifier(nn.Module):
    """An encoder and a linear head on its pooled features.

    Args:
        encoder: the run's encoder (pretrained or at random init).
        num_classes: C.
        frozen: keep the encoder fixed (no gradients, always in eval mode: batch-norm statistics too).
    """

    def __init__(self, encoder: Encoder, num_classes: int, frozen: bool = False):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.feature_dim, num_classes)
        self.frozen = frozen
        if frozen:
            encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Logits ``[B, C]`` of a modality batch (label removed)."""
        if self.frozen:
            with torch.no_grad():
                pooled = self.encoder(batch).pooled
        else:
            pooled = self.encoder(batch).pooled
        return self.head(pooled.to(self.head.weight.dtype))


def encoder_layer_ids(encoder: nn.Module) -> tuple[dict[str, int], int]:
    """Each parameter's layer (0 embeddings, ``i + 1`` block ``i``, ``L + 1`` after the blocks) and ``L``.

    Raises:
        SSLHubError: the encoder has no numbered blocks (layer decay needs a transformer).
    """
    blocks = {name: int(m.group(1)) for name, _ in encoder.named_parameters() if (m := BLOCK_PATTERN.search(name))}
    if not blocks:
        raise SSLHubError(
            f"finetune.layer_decay: encoder {type(encoder).__name__} has no numbered transformer blocks "
            "(parameters named blocks.N, layer.N, layers.N or h.N); set finetune.layer_decay=null"
        )
    count = max(blocks.values()) + 1
    ids, seen_block = {}, False
    for name, _ in encoder.named_parameters():
        if name in blocks:
            ids[name], seen_block = blocks[name] + 1, True
        else:
            ids[name] = count + 1 if seen_block else 0
    return ids, count


def parameter_groups(
    classifier: Classifier,
    head_lr: float,
    encoder_lr_scale: float,
    layer_decay: float | None,
    weight_decay: float,
    decay_norm_and_bias: bool = False,
) -> list[dict]:
    """Optimizer groups: the head at ``head_lr``; the encoder at ``head_lr * encoder_lr_scale``,
    times ``layer_decay ** (L + 1 - layer)`` per layer when given. Norms and biases (ndim <= 1)
    get no weight decay unless ``decay_norm_and_bias``. Each group records its ``layer``.
    """
    groups: dict[tuple[int, bool], dict] = {}

    def add(param: nn.Parameter, lr: float, layer: int) -> None:
        decays = param.ndim > 1 or decay_norm_and_bias
        group = groups.setdefault(
            (layer, decays),
            {"params": [], "lr": lr, "weight_decay": weight_decay if decays else 0.0, "layer": layer},
        )
        group["params"].append(param)

    encoder_lr = head_lr * encoder_lr_scale
    trainable = [(n, p) for n, p in classifier.encoder.named_parameters() if p.requires_grad]
    if trainable and layer_decay is not None:
        ids, count = encoder_layer_ids(classifier.encoder)
        for name, param in trainable:
            add(param, encoder_lr * layer_decay ** (count + 1 - ids[name]), ids[name])
    else:
        for _, param in trainable:
            add(param, encoder_lr, 0)
    for param in classifier.head.parameters():
        add(param, head_lr, -1)  # -1: the head, outside the encoder's layers
    return list(groups.values())


def build_finetune_optimizer(groups: list[dict], name: str, options: dict) -> torch.optim.Optimizer:
    """The recipe's optimizer ``name`` over ``groups`` (each with its own ``lr``)."""
    unused = set(options) - OPTIMIZER_OPTIONS[name]
    assert not unused, unused
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=options["lr"], betas=tuple(options.get("betas", (0.9, 0.999))))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=options["lr"], momentum=options.get("momentum", 0.9))
    for group in groups:
        group["lars_exclude"] = group["weight_decay"] == 0.0
    return LARS(
        groups,
        lr=options["lr"],
        momentum=options.get("momentum", 0.9),
        trust_coefficient=options.get("trust_coefficient", 0.001),
    )
