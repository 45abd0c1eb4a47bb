"""``masked_audio``: masked prediction over encoder frames (wav2vec 2.0 / HuBERT style).

Per step: draw span masks over the encoder's frames (``[B, T']``), replace masked frame
embeddings with a learned mask embedding *before* the transformer (the encoder's
``frame_masking`` capability: ``embed_frames``, then ``transform_frames``), and predict at
masked frames:

* ``target: reconstruct`` -- regress the log-mel frames the masked encoder frame covers
  (its ``frame_rate_divisor`` mel frames stacked, ``n_mels * divisor`` values) with an L1 or
  L2 loss;
* ``target: clusters`` -- HuBERT iteration 1: classify the k-means cluster of those stacked
  log-mel frames (cross-entropy). The centroids are fitted in ``prepare`` (the engine calls
  it once before training, not when a checkpoint provides them) on ``kmeans_clips`` clips of
  the modality's training set (deterministic in the recipe seed, the global RNG untouched),
  and kept in a buffer so checkpoints save and restore them.
* ``target: clusters`` with a ``teacher`` -- HuBERT iteration 2: the clustered frames are those
  of layer ``teacher_layer`` of an encoder trained before (a run, fine-tune or export folder;
  see :mod:`sslhub_audio.objectives.cluster_teacher`), computed on the same views.

The encoder must declare ``frame_masking`` (checked when the recipe is validated) and have an
integer ``frame_rate_divisor`` (mel frames per encoder frame): ``frame_transformer``,
``wav2vec2`` and ``hubert`` do.

References:
    - Baevski et al., "wav2vec 2.0", NeurIPS 2020 (span masking, mask embedding).
    - Hsu et al., "HuBERT", TASLP 2021 (masked prediction of k-means units).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from sslhub import BuildContext, Encoder, Modality, ModalityInfo, Objective, ObjectiveOutput, Params
from sslhub_audio.encoders.frame_masking import frame_width, replace_masked_frames
from sslhub_audio.objectives.cluster_teacher import ClusterTeacher
from sslhub_audio.objectives.kmeans import assign_clusters, kmeans
from sslhub_audio.objectives.span_mask import span_mask


class MaskedAudioParams(Params):
    """Parameters of ``masked_audio``."""

    target: Literal["reconstruct", "clusters"] = Field(
        "reconstruct", description="'reconstruct' log-mel frames, or predict k-means 'clusters' of them (HuBERT)."
    )
    mask_start_probability: float = Field(
        0.065, gt=0, le=1, description="Probability that an encoder frame starts a masked span."
    )
    mask_span: int = Field(10, ge=1, description="Encoder frames per masked span.")
    loss: Literal["l1", "l2"] = Field("l2", description="Regression loss for target 'reconstruct'.")
    num_clusters: int = Field(100, ge=2, description="k-means clusters for target 'clusters'.")
    kmeans_clips: int = Field(256, ge=1, description="Training clips whose frames fit the k-means centroids.")
    kmeans_iterations: int = Field(50, ge=1, description="Maximum Lloyd iterations of the k-means fit.")
    teacher: str | None = Field(
        None,
        description="HuBERT iteration 2: a trained run, fine-tune or export folder whose encoder's frames are "
        "clustered instead of log-mel (needs target 'clusters' and the same frame rate).",
    )
    teacher_layer: int | None = Field(
        None,
        ge=1,
        description="The teacher's context layer whose frames are clustered (1 = first); default the middle one.",
    )

    @model_validator(mode="after")
    def _teacher_needs_clusters(self) -> MaskedAudioParams:
        if self.teacher is not None and self.target != "clusters":
            raise ValueError("teacher is for target 'clusters' (HuBERT iteration 2); set target: clusters")
        if self.teacher_layer is not None and self.teacher is None:
            raise ValueError("teacher_layer needs a teacher (the folder of the first iteration's run)")
        return self


def group_frames(features: Tensor, divisor: int, num_frames: int) -> Tensor:
    """Stack the ``divisor`` log-mel frames under each encoder frame.

    Args:
        features: ``[B, n_mels, T]``.
        divisor: mel frames per encoder frame.
        num_frames: encoder frames ``T'``; the mel axis is zero-padded or cut to ``T' * divisor``.

    Returns:
        ``[B, T', divisor * n_mels]``: row ``j`` is mel frames ``j*divisor .. (j+1)*divisor - 1``.
    """
    batch, n_mels, length = features.shape
    wanted = num_frames * divisor
    features = F.pad(features, (0, wanted - length)) if wanted > length else features[..., :wanted]
    grouped = features.reshape(batch, n_mels, num_frames, divisor).permute(0, 2, 3, 1)
    return grouped.reshape(batch, num_frames, divisor * n_mels)


def _check_encoder(encoder: Encoder | None) -> int:
    name = type(encoder).__name__
    if encoder is None:
        raise ValueError("objective 'masked_audio' needs the built encoder in the build context")
    if "frame_masking" not in getattr(encoder, "provides", ()):
        raise ValueError(
            f"objective 'masked_audio' needs an encoder that declares frame_masking (to put mask embeddings "
            f"before the transformer); {name} does not: use encoder 'frame_transformer', 'wav2vec2' or 'hubert'"
        )
    divisor = getattr(encoder, "frame_rate_divisor", None)
    if not isinstance(divisor, int) or divisor < 1:
        raise ValueError(
            f"objective 'masked_audio' needs {name}.frame_rate_divisor (mel frames per encoder frame) to be a "
            f"positive integer, got {divisor!r}; for wav2vec2/hubert make the conv stride a multiple of hop_length"
        )
    return divisor


class MaskedAudioObjective(Objective):
    """Masked prediction of log-mel frames or of their k-means clusters at span-masked encoder frames."""

    num_views = 1

    def __init__(self, params: MaskedAudioParams, context: BuildContext):
        super().__init__()
        self.params = params
        encoder = context.encoder
        self.divisor = _check_encoder(encoder)
        info = context.modality.info() if context.modality is not None else ModalityInfo()
        if info.n_mels is None:
            raise ValueError("objective 'masked_audio' needs the audio modality (its info() gives n_mels)")
        self.teacher = ClusterTeacher(params.teacher, params.teacher_layer, self.divisor) if params.teacher else None
        self.target_dim = self.teacher.dim if self.teacher else int(info.n_mels) * self.divisor
        dim = frame_width(encoder)  # heads read frames
        self.mask_embedding = nn.Parameter(torch.empty(dim).normal_(0.0, 0.02))
        if params.target == "reconstruct":
            self.head = nn.Linear(dim, self.target_dim)
            self.register_buffer("centroids", None)
        else:
            self.head = nn.Linear(dim, params.num_clusters)
            self.register_buffer("centroids", torch.zeros(params.num_clusters, self.target_dim))
        self.seed = context.seed
        # Not saved: a checkpoint that restores the centroids also marks them fitted (hook below).
        self.fitted = params.target == "reconstruct"
        self.register_load_state_dict_post_hook(_centroids_loaded)

    def prepare(self, modality: Modality, encoder: Encoder) -> None:
        """Fit the k-means centroids (``target: clusters``); nothing to do for ``reconstruct``."""
        if self.params.target == "clusters":
            self.centroids.copy_(self.fit_centroids(modality, encoder, self.seed, self.centroids.device))
            self.fitted = True

    @torch.no_grad()
    def fit_centroids(self, modality: Modality, encoder: Encoder, seed: int, device: torch.device) -> Tensor:
        """k-means centroids ``[num_clusters, target_dim]`` of stacked log-mel frames of training clips."""
        p = self.params
        dataset = modality.train_dataset()
        generator = torch.Generator().manual_seed(seed)
        indices = torch.randperm(len(dataset), generator=generator)[: p.kmeans_clips].tolist()
        rows = []
        for start in range(0, len(indices), 64):
            samples = [dataset[i] for i in indices[start : start + 64]]
            batch = modality.collate(samples)
            batch = modality.on_device({k: v.to(device) for k, v in batch.items()})
            rows.append(self.cluster_inputs(batch, encoder.count_frames(batch)).flatten(0, 1))
        frames = torch.cat(rows)
        if frames.shape[0] < p.num_clusters:
            raise ValueError(
                f"masked_audio: {frames.shape[0]} frames from {len(indices)} clips cannot fit num_clusters="
                f"{p.num_clusters}; raise kmeans_clips or lower num_clusters"
            )
        return kmeans(frames, p.num_clusters, iterations=p.kmeans_iterations, seed=seed)

    def cluster_inputs(self, batch: dict[str, Tensor], num_frames: int) -> Tensor:
        """What is clustered, per encoder frame: ``[B, T', target_dim]`` (stacked log-mel or teacher frames)."""
        if self.teacher is not None:
            return self.teacher.frames(batch, num_frames)
        return group_frames(batch["features"], self.divisor, num_frames)

    def _loss(
        self, batch: dict[str, Tensor], encoder: Encoder, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.params
        features = batch["features"]
        num_frames = encoder.count_frames(batch)
        mask = span_mask(
            features.shape[0], num_frames, p.mask_start_probability, p.mask_span, features.device, generator
        )
        frames = replace_masked_frames(encoder.embed_frames(batch), mask, self.mask_embedding)
        tokens = encoder.transform_frames(frames).tokens
        predictions = self.head(tokens[mask])
        metrics: dict[str, Tensor] = {"masked_fraction": mask.float().mean().detach()}
        if p.target == "reconstruct":
            targets = group_frames(features, self.divisor, num_frames)[mask]  # [M, target_dim]
            predictions = predictions.float()
            if p.loss == "l1":
                loss = F.l1_loss(predictions, targets)
            else:
                loss = F.mse_loss(predictions, targets)
        else:
            if not self.fitted:
                raise RuntimeError(
                    "masked_audio: the k-means centroids are not fitted; call objective.prepare(modality, encoder) "
                    "or load a checkpoint before training"
                )
            labels = assign_clusters(self.cluster_inputs(batch, num_frames)[mask], self.centroids)
            loss = F.cross_entropy(predictions.float(), labels)
            metrics["accuracy"] = (predictions.argmax(dim=-1) == labels).float().mean().detach()
        return loss, metrics

    def forward(self, views: list[dict[str, Tensor]], encoder: Encoder) -> ObjectiveOutput:
        """Args: views: one batch with ``features [B, n_mels, T]`` (and ``waveform`` for waveform encoders)."""
        loss, metrics = self._loss(views[0], encoder)
        return ObjectiveOutput(loss=loss, metrics=metrics)

    @torch.no_grad()
    def held_out_metrics(self, batch: dict[str, Tensor], encoder: Encoder) -> dict[str, float]:
        """Loss (and cluster accuracy) with masks from a fixed generator, comparable across evaluations."""
        generator = torch.Generator().manual_seed(0)
        loss, metrics = self._loss(batch, encoder, generator)
        out = {"masked_loss": float(loss)}
        if "accuracy" in metrics:
            out["masked_accuracy"] = float(metrics["accuracy"])
        return out


def _centroids_loaded(module: nn.Module, incompatible_keys) -> None:
    """After ``load_state_dict``, centroids that came from the state are fitted ones."""
    if isinstance(module, MaskedAudioObjective):
        module.fitted = True
