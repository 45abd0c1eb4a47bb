"""``clip``: align an image encoder and a text encoder in a shared embedding space.

Each encoder's pooled features go through its own projection to ``projection_dim``; the
symmetric InfoNCE of :class:`sslhub_multimodal.losses.CLIPLoss` (learnable temperature,
negatives gathered across ranks) pulls each image towards its caption and away from the
other captions of the batch, and vice versa.

After training, :meth:`CLIPObjective.report` scores image->text and text->image retrieval
(recall@k) on the held-out pairs and zero-shot classification from class-name prompts,
beside the chance level and beside re-initialised (random) copies of the encoders.

References:
    - Radford et al., "Learning Transferable Visual Models From Natural Language Supervision"
      (CLIP), ICML 2021, https://arxiv.org/abs/2103.00020
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from sslhub import Batch, BuildContext, Encoder, EncoderSet, Modality, Objective, ObjectiveOutput, Params
from sslhub_multimodal.losses.clip import CAPTION_KEY, CLIPLoss, caption_keys, clip_loss, retrieval_accuracy
from sslhub_multimodal.retrieval import retrieval_scores, zero_shot_accuracy

IMAGE, TEXT = "image", "text"

#: seed of the re-initialised encoders the report compares against.
RANDOM_INIT_SEED = 0


class CLIPParams(Params):
    """Parameters of the ``clip`` objective."""

    projection_dim: int = Field(64, gt=0, description="size of the shared image-text embedding space")
    projection_layers: int = Field(
        1, ge=1, le=3, description="layers of each projection: 1 is linear (CLIP), more add GELU hidden layers"
    )
    temperature: float = Field(0.07, gt=0.0, description="initial softmax temperature (logit scale 1/temperature)")
    learnable_temperature: bool = Field(True, description="learn the temperature (as log of the logit scale)")
    max_logit_scale: float = Field(100.0, gt=0.0, description="upper clip of the logit scale 1/temperature")
    identical_captions: Literal["positives", "negatives"] = Field(
        "positives",
        description="pairs in a batch with identical captions: positives of each other, or negatives (plain CLIP)",
    )
    gather_distributed: bool = Field(True, description="use the other ranks' pairs as negatives under DDP")
    zero_shot_prompts: list[str] = Field(
        default_factory=lambda: ["a photo of a {name}"],
        min_length=1,
        description="class-name prompts for zero-shot classification in the report; {name} is the class name",
    )
    retrieval_ks: list[int] = Field(default_factory=lambda: [1, 5], min_length=1, description="recall@k cut-offs")
    report_batch_size: int = Field(256, gt=0, description="batch size of the report's embedding passes")

    @field_validator("zero_shot_prompts")
    @classmethod
    def _prompts_have_name(cls, prompts: list[str]) -> list[str]:
        for prompt in prompts:
            if "{name}" not in prompt:
                raise ValueError(f"zero-shot prompt {prompt!r} has no {{name}} slot for the class name")
        return prompts

    @field_validator("retrieval_ks")
    @classmethod
    def _positive_ks(cls, ks: list[int]) -> list[int]:
        if any(k < 1 for k in ks):
            raise ValueError(f"retrieval_ks must all be >= 1, got {ks}")
        return sorted(set(ks))

    @model_validator(mode="after")
    def _temperature_within_clip(self) -> CLIPParams:
        if 1.0 / self.temperature > self.max_logit_scale:
            raise ValueError(
                f"temperature {self.temperature} gives a logit scale of {1 / self.temperature:.4g}, "
                f"above max_logit_scale {self.max_logit_scale}"
            )
        return self


def projection(input_dim: int, output_dim: int, layers: int) -> nn.Module:
    """A linear map ``[B, input_dim] -> [B, output_dim]``, or an MLP with GELU for ``layers > 1``."""
    if layers == 1:
        return nn.Linear(input_dim, output_dim, bias=False)
    modules: list[nn.Module] = []
    for _ in range(layers - 1):
        modules += [nn.Linear(input_dim, input_dim), nn.GELU()]
    modules.append(nn.Linear(input_dim, output_dim, bias=False))
    return nn.Sequential(*modules)


def _encoder_pair(encoders: Any) -> tuple[Encoder, Encoder]:
    if not isinstance(encoders, EncoderSet | nn.ModuleDict | Mapping) or IMAGE not in encoders or TEXT not in encoders:
        raise ValueError(
            "clip needs an image and a text encoder: give both under the recipe's encoders: "
            "{image: {...}, text: {...}} (it received "
            f"{type(encoders).__name__ if not isinstance(encoders, Mapping | nn.ModuleDict) else sorted(encoders)})"
        )
    return encoders[IMAGE], encoders[TEXT]


def _reinitialised(module: nn.Module, seed: int) -> nn.Module:
    """A copy of ``module`` with every layer's ``reset_parameters()`` called (seeded, RNG restored)."""
    clone = copy.deepcopy(module)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in clone.modules():
            reset = getattr(layer, "reset_parameters", None)
            if callable(reset):
                reset()
    return clone


class CLIPObjective(Objective):
    """CLIP: image encoder -> projection, text encoder -> projection, symmetric InfoNCE.

    Registered with ``encoders=["image", "text"]``: it receives an :class:`sslhub.EncoderSet`
    and trains both. One view: image augmentations apply to ``batch["image"]`` and leave the
    caption alone.

    Metrics: ``image_to_text_accuracy`` and ``text_to_image_accuracy`` (share of in-batch
    queries whose best match is a positive) and ``logit_scale``.
    """

    num_views = 1
    report_takes_baseline = True

    def __init__(self, params: CLIPParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params = params or CLIPParams()
        image_encoder, text_encoder = _encoder_pair(context.encoder if context is not None else None)
        for name, encoder in ((IMAGE, image_encoder), (TEXT, text_encoder)):
            if not encoder.feature_dim:
                raise ValueError(f"clip: the {name} encoder has no feature_dim to size its projection")
        self.image_projection = projection(image_encoder.feature_dim, params.projection_dim, params.projection_layers)
        self.text_projection = projection(text_encoder.feature_dim, params.projection_dim, params.projection_layers)
        self.loss_fn = CLIPLoss(
            params.temperature,
            learnable_temperature=params.learnable_temperature,
            max_logit_scale=params.max_logit_scale,
            gather_distributed=params.gather_distributed,
        )

    def export_heads(self) -> dict[str, nn.Module]:
        """Each encoder's projection into the joint space (before L2 normalisation), by encoder key."""
        return {f"{IMAGE}.projection": self.image_projection, f"{TEXT}.projection": self.text_projection}

    def embed(self, batch: Batch, encoders: Any) -> tuple[Tensor, Tensor]:
        """Projected (not yet normalised) embeddings: image ``[B, P]`` and text ``[B, P]``."""
        image_encoder, text_encoder = _encoder_pair(encoders)
        image = self.image_projection(image_encoder(batch).pooled)
        text = self.text_projection(text_encoder(batch).pooled)
        return image, text

    def _keys(self, batch: Batch) -> Tensor | None:
        """Caption identities for identical-caption positives: the modality's keys of the captions
        as written when the batch has them (caption augmentations change the ids), else keys of
        the ids as they are."""
        if self.params.identical_captions == "negatives":
            return None
        written = batch.get(CAPTION_KEY)
        return written if written is not None else caption_keys(batch["input_ids"], batch["attention_mask"])

    def _loss_and_metrics(self, batch: Batch, encoders: Any) -> tuple[Tensor, dict[str, Tensor]]:
        image, text = self.embed(batch, encoders)
        logits_per_image, logits_per_text, positives = self.loss_fn.logits_and_positives(image, text, self._keys(batch))
        loss = clip_loss(logits_per_image, logits_per_text, positives)
        with torch.no_grad():
            metrics = {
                "image_to_text_accuracy": retrieval_accuracy(logits_per_image, positives),
                "text_to_image_accuracy": retrieval_accuracy(logits_per_text, positives),
                "logit_scale": self.loss_fn.logit_scale.detach(),
            }
        return loss, metrics

    def forward(self, views: list[Batch], encoders: Any) -> ObjectiveOutput:
        if not views:
            raise ValueError("clip needs one view of each batch, got none")
        loss, metrics = self._loss_and_metrics(views[0], encoders)
        return ObjectiveOutput(loss=loss, metrics=metrics)

    @torch.no_grad()
    def held_out_metrics(self, batch: Batch, encoders: Any) -> dict[str, float]:
        """Loss and in-batch accuracies on one held-out batch."""
        loss, metrics = self._loss_and_metrics(batch, encoders)
        return {"loss": float(loss), **{k: float(v) for k, v in metrics.items() if k != "logit_scale"}}

    # ------------------------------------------------------------------ report
    @torch.no_grad()
    def embed_dataset(
        self,
        encoders: Any,
        modality: Modality,
        dataset: Dataset,
        projections: tuple[nn.Module, nn.Module] | None = None,
    ) -> dict[str, Tensor | None]:
        """Normalised embeddings of every pair of ``dataset`` (eval mode, no augmentation).

        Returns:
            ``image`` ``[N, P]``, ``text`` ``[N, P]``, ``keys`` int64 ``[N]``, ``input_ids`` (list
            of unpadded id tensors, for showing examples) and ``label`` int64 ``[N]`` (or ``None``).
        """
        image_encoder, text_encoder = _encoder_pair(encoders)
        image_projection, text_projection = projections or (self.image_projection, self.text_projection)
        device = next(self.parameters()).device
        images, texts, keys, labels, ids = [], [], [], [], []
        loader = DataLoader(
            dataset, batch_size=self.params.report_batch_size, shuffle=False, collate_fn=modality.collate
        )
        for batch in loader:
            if "label" in batch:
                labels.append(batch.pop("label").long().cpu())
            batch = modality.on_device({k: v.to(device) for k, v in batch.items()})
            images.append(F.normalize(image_projection(image_encoder(batch).pooled).float(), dim=1).cpu())
            texts.append(F.normalize(text_projection(text_encoder(batch).pooled).float(), dim=1).cpu())
            keys.append(caption_keys(batch["input_ids"], batch["attention_mask"]).cpu())
            ids += [
                row[mask.bool()].cpu() for row, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
            ]
        return {
            "image": torch.cat(images),
            "text": torch.cat(texts),
            "keys": torch.cat(keys),
            "label": torch.cat(labels) if labels else None,
            "input_ids": ids,
        }

    @torch.no_grad()
    def class_embeddings(
        self, text_encoder: Encoder, text_projection: nn.Module, modality: Modality, class_names: tuple[str, ...]
    ) -> Tensor:
        """One normalised embedding per class: the mean of its prompts' embeddings ``[K, P]``.

        The prompts become samples as captions do, through the modality's text part.
        """
        device = next(self.parameters()).device
        prompts = [prompt.format(name=name) for name in class_names for prompt in self.params.zero_shot_prompts]
        text = modality.parts["text"]
        samples = text.part_dataset(prompts)
        batch = {k: v.to(device) for k, v in text.collate([samples[i] for i in range(len(prompts))]).items()}
        embedded = F.normalize(text_projection(text_encoder(modality.on_device(batch)).pooled).float(), dim=1)
        per_class = embedded.view(len(class_names), len(self.params.zero_shot_prompts), -1).mean(1)
        return F.normalize(per_class, dim=1).cpu()

    def _scores(
        self,
        encoders: Any,
        projections: tuple[nn.Module, nn.Module],
        modality: Modality,
        dataset: Dataset,
        class_names: tuple[str, ...],
    ) -> tuple[dict[str, float], dict[str, float], dict[str, Tensor | None]]:
        embedded = self.embed_dataset(encoders, modality, dataset, projections)
        scores = retrieval_scores(
            embedded["image"], embedded["text"], embedded["keys"], embedded["label"], self.params.retrieval_ks
        )
        chance = {k.removeprefix("chance/"): v for k, v in scores.items() if k.startswith("chance/")}
        scores = {k: v for k, v in scores.items() if not k.startswith("chance/")}
        if class_names and embedded["label"] is not None and "text" in modality.parts:
            classes = self.class_embeddings(_encoder_pair(encoders)[1], projections[1], modality, class_names)
            scores["zero_shot_accuracy"] = round(zero_shot_accuracy(embedded["image"], classes, embedded["label"]), 4)
            chance["zero_shot_accuracy"] = round(1.0 / len(class_names), 4)
        return scores, chance, embedded

    def report(
        self, run_dir: Path, encoders: Any, modality: Modality, baseline: tuple[CLIPObjective, Any] | None = None
    ) -> dict[str, Any]:
        """Held-out retrieval and zero-shot scores: trained, random-init and chance.

        The pairs are the labeled eval test split when the modality has one (class-level
        recall and zero-shot classification need labels), else its held-out pairs.
        ``random_init`` scores the engine's random-init baseline (``baseline``: this objective
        with fresh projections, and both encoders at their initialisation), the same networks
        as the baseline column of the kNN and probe figures. Called without one, it
        re-initialises copies of both encoders and projections itself (``reset_parameters()``,
        seed 0) and says so under ``random_init_source``.
        """
        split = modality.eval_split()
        dataset = split.test if split is not None else modality.held_out_dataset()
        class_names = tuple(split.class_names) if split is not None else ()
        if dataset is None or len(dataset) < 2:
            return {}
        image_encoder, text_encoder = _encoder_pair(encoders)
        if baseline is not None:
            random_objective, random_set = baseline
            random_projections = (random_objective.image_projection, random_objective.text_projection)
            source = "the engine's random-init baseline"
        else:
            random_set = {
                IMAGE: _reinitialised(image_encoder, RANDOM_INIT_SEED),
                TEXT: _reinitialised(text_encoder, RANDOM_INIT_SEED + 1),
            }
            random_projections = (
                _reinitialised(self.image_projection, RANDOM_INIT_SEED + 2),
                _reinitialised(self.text_projection, RANDOM_INIT_SEED + 3),
            )
            source = "copies re-initialised by the report"
        random_modules = [*_encoder_pair(random_set), *random_projections]
        modes = [(m, m.training) for m in (image_encoder, text_encoder, self, *random_modules)]
        for module, _ in modes:
            module.eval()
        try:
            trained, chance, embedded = self._scores(
                encoders, (self.image_projection, self.text_projection), modality, dataset, class_names
            )
            random_init, _, _ = self._scores(random_set, random_projections, modality, dataset, class_names)
        finally:
            for module, was_training in modes:
                module.train(was_training)
        return {
            "held_out_pairs": len(dataset),
            "trained": trained,
            "random_init": random_init,
            "random_init_source": source,
            "chance": chance,
            "temperature": round(self.loss_fn.temperature, 5),
            "examples": self._examples(embedded, modality),
        }

    @staticmethod
    def _examples(embedded: dict[str, Any], modality: Modality, count: int = 5, top: int = 3) -> list[dict[str, Any]]:
        """For the first few held-out images: their caption and the ``top`` captions retrieved."""
        text_part = modality.parts.get("text")
        if text_part is None:
            return []
        similarity = embedded["image"][:count] @ embedded["text"].T
        keys = embedded["keys"].tolist()

        def text(index: int) -> str:
            ids = embedded["input_ids"][index][None]
            return text_part.decode_sample({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, 0) or ""

        examples = []
        for row in range(similarity.shape[0]):
            retrieved: list[int] = []
            for index in similarity[row].argsort(descending=True).tolist():
                # identical captions tie; show distinct ones
                if all(keys[index] != keys[seen] for seen in retrieved):
                    retrieved.append(index)
                if len(retrieved) == top:
                    break
            examples.append({"caption": text(row), "retrieved": [text(i) for i in retrieved]})
        return examples
