"""A complete, tiny plugin used by the core tests: vectors in clusters, an MLP, a contrastive loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset

from sslhub import (
    Augmentation,
    Encoder,
    EncoderOutput,
    EvalSplit,
    Modality,
    ModalityInfo,
    Objective,
    ObjectiveOutput,
    Params,
    gather_with_grad,
    hookimpl,
)


class ToyVectorsParams(Params):
    samples: int = Field(512, gt=0)
    dim: int = Field(16, gt=1)
    clusters: int = Field(4, gt=1)
    held_out: int = Field(0, ge=0, description="the last N samples are held out: validated on, never trained on")


class _Vectors(Dataset):
    def __init__(self, data: torch.Tensor, labels: torch.Tensor | None):
        self.data, self.labels = data, labels

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: int):
        sample = {"vector": self.data[index]}
        if self.labels is not None:
            sample["label"] = self.labels[index]
        return sample


class ToyVectors(Modality):
    """Points around random cluster centres in a subspace, hidden among noisy dimensions."""

    input_names = ("vector",)

    def __init__(self, params: ToyVectorsParams, context):
        self.params = params
        generator = torch.Generator().manual_seed(1234)
        centres = torch.randn(params.clusters, 4, generator=generator) * 2.0
        labels = torch.randint(0, params.clusters, (params.samples,), generator=generator)
        signal = centres[labels] + 0.6 * torch.randn(params.samples, 4, generator=generator)
        noise = 2.0 * torch.randn(params.samples, params.dim - 4, generator=generator)
        self.data = torch.cat([signal, noise], dim=1)
        self.labels = labels

    def train_dataset(self):
        return _Vectors(self.data[: self.params.samples - self.params.held_out], None)

    def held_out_dataset(self):
        return _Vectors(self.data[self.params.samples - self.params.held_out :], None) if self.params.held_out else None

    def eval_split(self):
        half = self.params.samples // 2
        return EvalSplit(_Vectors(self.data[:half], self.labels[:half]), _Vectors(self.data[half:], self.labels[half:]))

    def example_batch(self, batch_size, device="cpu"):
        return {"vector": torch.randn(batch_size, self.params.dim, device=device)}

    def raw_features(self, batch):
        return batch["vector"]

    def info(self):
        return ModalityInfo(dim=self.params.dim)

    def augmentation_samples(self, batch, views):
        """A heat map of each sample's vector above its views' (one pixel row each), and the numbers."""
        rows = torch.stack([batch["vector"]] + [view["vector"] for view in views], dim=1).flatten(0, 1)
        scaled = (rows - rows.min()) / (rows.max() - rows.min()).clamp_min(1e-6)
        picture = (scaled * 255).round().to(torch.uint8).repeat_interleave(8, 0).repeat_interleave(8, 1)
        text = "\n".join(" ".join(f"{v:.2f}" for v in row[:6].tolist()) for row in rows)
        return {"vectors": picture, "first_values": text}

    def input_spec(self):
        return {
            "inputs": {"vector": {"dtype": "float32", "shape": ["batch", self.params.dim]}},
            "dynamic_axes": {"vector": {0: "batch"}},
            "preprocessing": {},
        }

    def fingerprint(self):
        return f"toy-{self.params.samples}-{self.params.dim}"


class NoiseParams(Params):
    scale: float = Field(1.0, ge=0)


class NoisyDimensions(Augmentation):
    """Resample the nuisance dimensions (a view that keeps the signal)."""

    def __init__(self, params: NoiseParams, context):
        super().__init__()
        self.scale = params.scale

    def forward(self, batch):
        vector = batch["vector"]
        noise = torch.randn_like(vector[:, 4:]) * 2.0 * self.scale
        return {**batch, "vector": torch.cat([vector[:, :4], noise], dim=1)}


class MlpParams(Params):
    hidden: int = Field(32, gt=0)
    out: int = Field(16, gt=0)


class ToyMlp(Encoder):
    """Two-layer MLP."""

    input_names = ("vector",)

    def __init__(self, params: MlpParams, context):
        super().__init__()
        dim = context.modality.info().dim
        self.net = nn.Sequential(nn.Linear(dim, params.hidden), nn.ReLU(), nn.Linear(params.hidden, params.out))
        self.feature_dim = params.out

    def forward(self, batch):
        return EncoderOutput(pooled=self.net(batch["vector"]))


class ContrastParams(Params):
    temperature: float = Field(0.2, gt=0)
    nan_at_step: int = Field(-1, description="test hook: return NaN at this call")


class ToyContrastive(Objective):
    """InfoNCE between two views."""

    num_views = 2

    def __init__(self, params: ContrastParams, context):
        super().__init__()
        self.params = params
        self.head = nn.Linear(context.encoder.feature_dim, 8)
        self.calls = 0

    def export_heads(self):
        return {"head": self.head}

    def forward(self, views, encoder):
        if self.params.nan_at_step >= 0:  # counted only when asked: a changing int would recompile under compile
            self.calls += 1
        a = F.normalize(self.head(encoder(views[0]).pooled), dim=1)
        b = F.normalize(self.head(encoder(views[1]).pooled), dim=1)
        b_all = gather_with_grad(b)
        logits = a @ b_all.T / self.params.temperature
        offset = a.shape[0] * (torch.distributed.get_rank() if torch.distributed.is_initialized() else 0)
        targets = torch.arange(a.shape[0], device=a.device) + offset
        loss = F.cross_entropy(logits, targets)
        if self.calls == self.params.nan_at_step:
            loss = loss * float("nan")
        accuracy = (logits.argmax(1) == targets).float().mean()
        return ObjectiveOutput(loss, {"accuracy": accuracy})

    def held_out_metrics(self, batch, encoder):
        """``accuracy``: each sample finds itself among the batch once its nuisance dimensions are zeroed."""
        vector = batch["vector"]
        quiet = {"vector": torch.cat([vector[:, :4], torch.zeros_like(vector[:, 4:])], dim=1)}
        return {"accuracy": float(self.forward([batch, quiet], encoder).metrics["accuracy"])}


@hookimpl
def sslhub_register_modalities(registry):
    registry.register("toy_vectors", ToyVectors, params=ToyVectorsParams)


@hookimpl
def sslhub_register_augmentations(registry):
    registry.register("toy_noise", NoisyDimensions, params=NoiseParams, modalities=["toy_vectors"])


@hookimpl
def sslhub_register_encoders(registry):
    registry.register("toy_mlp", ToyMlp, params=MlpParams, modalities=["toy_vectors"])


@hookimpl
def sslhub_register_objectives(registry):
    registry.register("toy_contrastive", ToyContrastive, params=ContrastParams)
