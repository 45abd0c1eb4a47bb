"""Masked language modelling (BERT): corrupt 15% of tokens, predict the originals.

Of the selected tokens, 80% become ``[MASK]``, 10% a random token, 10% stay unchanged;
the loss is cross-entropy on the selected positions only. Special tokens and padding are
never selected. The LM head (dense -> GELU -> LayerNorm -> decoder) ties the decoder weight
to the encoder's input embedding table.

References:
    - Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
      Understanding", NAACL 2019.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from sslhub import Batch, BuildContext, Encoder, Modality, Objective, ObjectiveOutput, Params
from sslhub_text.objectives.held_out import token_weighted_totals

#: The masked-text examples the report shows, in the run directory.
MASKED_SAMPLES_FILE = "mlm_masked_samples.txt"


class MLMParams(Params):
    """Parameters of the ``mlm`` objective."""

    mask_probability: float = Field(0.15, gt=0.0, lt=1.0, description="Fraction of eligible tokens selected.")
    mask_token_ratio: float = Field(0.8, ge=0.0, le=1.0, description="Of the selected, fraction replaced by [MASK].")
    random_token_ratio: float = Field(
        0.1, ge=0.0, le=1.0, description="Of the selected, fraction replaced by a random token (the rest unchanged)."
    )
    whole_word_masking: bool = Field(
        False, description="Select whole words: a word's ## continuation pieces follow its first piece."
    )
    held_out_seed: int = Field(1234, description="Seed of the fixed masks used for held-out metrics.")

    def modality_needs(self) -> frozenset[str]:
        """``word_continuations`` with ``whole_word_masking``: a word's pieces are found from the modality."""
        return frozenset({"word_continuations"}) if self.whole_word_masking else frozenset()

    report_max_samples: int | None = Field(
        20000,
        gt=0,
        description="The end-of-run report (held-out accuracy, perplexity, unigram baseline) uses at most the "
        "first this many held-out samples; null for all.",
    )

    @model_validator(mode="after")
    def _ratios_fit(self) -> MLMParams:
        if self.mask_token_ratio + self.random_token_ratio > 1.0 + 1e-9:
            raise ValueError(
                f"mask_token_ratio + random_token_ratio must be <= 1, got "
                f"{self.mask_token_ratio} + {self.random_token_ratio}"
            )
        return self


def word_start_positions(input_ids: Tensor, eligible: Tensor, is_continuation: Tensor) -> Tensor:
    """Index of the first piece of the word each position belongs to.

    Args:
        input_ids: ``int64 [B, L]``.
        eligible: ``bool [B, L]`` positions that may be masked (not special, not padding).
        is_continuation: ``bool [V]`` True for vocabulary entries that continue a word.

    Returns:
        ``int64 [B, L]``: for a word's first piece its own index, for a continuation piece the
        index of the latest preceding word start (0 if none).
    """
    starts = eligible & ~is_continuation[input_ids]
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    return torch.where(starts, positions, torch.zeros_like(positions)).cummax(dim=1).values


def mask_tokens(
    input_ids: Tensor,
    eligible: Tensor,
    *,
    mask_token_id: int,
    replacement_ids: Tensor,
    mask_probability: float = 0.15,
    mask_token_ratio: float = 0.8,
    random_token_ratio: float = 0.1,
    word_starts: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT corruption: select tokens, then replace with [MASK] / a random token / keep.

    Args:
        input_ids: ``int64 [B, L]`` original tokens.
        eligible: ``bool [B, L]`` positions that may be selected.
        mask_token_id: id of ``[MASK]``.
        replacement_ids: ``int64 [K]`` ids random replacements are drawn from (non-special).
        mask_probability: selection probability per eligible token (per word with ``word_starts``).
        mask_token_ratio: fraction of selected tokens set to ``mask_token_id``.
        random_token_ratio: fraction of selected tokens set to a random id.
        word_starts: ``int64 [B, L]`` from :func:`word_start_positions` for whole-word masking.
        generator: RNG for reproducible masks (held-out metrics); the global RNG otherwise.

    Returns:
        ``(corrupted_ids [B, L], selected [B, L] bool)``.
    """
    shape, device = input_ids.shape, input_ids.device
    draw = torch.rand(shape, device=device, generator=generator)
    if word_starts is not None:
        # One draw per word: every piece uses its word's first-piece draw.
        draw = draw.gather(1, word_starts)
    selected = eligible & (draw < mask_probability)
    action = torch.rand(shape, device=device, generator=generator)
    to_mask = selected & (action < mask_token_ratio)
    to_random = selected & (action >= mask_token_ratio) & (action < mask_token_ratio + random_token_ratio)
    random_ids = replacement_ids[torch.randint(len(replacement_ids), shape, device=device, generator=generator)]
    corrupted = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    corrupted = torch.where(to_random, random_ids, corrupted)
    return corrupted, selected


class LMHead(nn.Module):
    """``[N, D] -> [N, V]`` logits: dense -> GELU -> LayerNorm -> decoder tied to the embeddings.

    The tied embedding module is kept out of this module's parameters (it belongs to the
    encoder), so an optimizer over ``encoder.parameters()`` and ``objective.parameters()``
    sees it exactly once and checkpoints do not store it twice.

    Args:
        hidden_size: ``D``, the encoder's token feature width.
        embeddings: the encoder's input embedding ``nn.Embedding`` ``[V, E]``.
        layer_norm_eps: LayerNorm epsilon.
    """

    def __init__(self, hidden_size: int, embeddings: nn.Embedding, layer_norm_eps: float = 1e-12):
        super().__init__()
        vocab_size, embedding_dim = embeddings.weight.shape
        self.dense = nn.Linear(hidden_size, embedding_dim)
        self.layer_norm = nn.LayerNorm(embedding_dim, eps=layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        object.__setattr__(self, "_embeddings", embeddings)  # a reference, not a submodule

    @property
    def decoder_weight(self) -> Tensor:
        """The tied decoder weight ``[V, E]``: the encoder's embedding parameter itself."""
        return self._embeddings.weight

    def forward(self, hidden: Tensor) -> Tensor:
        hidden = self.layer_norm(F.gelu(self.dense(hidden)))
        return F.linear(hidden, self.decoder_weight, self.bias)


class MLMObjective(Objective):
    """Masked language modelling on the encoder's token features, with a tied LM head.

    Args:
        params: :class:`MLMParams`.
        context: ``context.encoder`` must provide ``tokens`` and ``get_input_embeddings()``;
            ``context.modality.info()`` (a :class:`sslhub.ModalityInfo`) gives ``mask_token_id``, ``pad_token_id``,
            ``special_token_ids`` and ``vocab_size``.
    """

    num_views = 1

    def __init__(self, params: MLMParams, context: BuildContext):
        super().__init__()
        encoder, modality = context.encoder, context.modality
        if encoder is None or modality is None:
            raise ValueError("mlm objective needs the built encoder and modality in its context")
        if "token_embeddings" not in getattr(encoder, "provides", ()):
            raise ValueError(
                f"mlm objective ties its decoder to the encoder's token embeddings, but "
                f"{type(encoder).__name__} does not declare provides 'token_embeddings'; use the 'hf' encoder"
            )
        info = modality.info()
        if info.mask_token_id is None:
            raise ValueError("mlm objective: the tokenizer has no mask token ([MASK] or <mask>)")
        self.params = params
        self.mask_token_id = int(info.mask_token_id)
        self.vocab_size = int(info.needed("vocab_size", "mlm objective"))
        pad_token_id = int(info.needed("pad_token_id", "mlm objective"))
        special = torch.tensor(sorted(set(info.special_token_ids or ()) | {pad_token_id}))
        is_special = torch.zeros(self.vocab_size, dtype=torch.bool)
        is_special[special] = True
        self.register_buffer("is_special", is_special, persistent=False)
        self.register_buffer("replacement_ids", torch.nonzero(~is_special).squeeze(1), persistent=False)
        is_continuation = torch.zeros(self.vocab_size, dtype=torch.bool)
        if params.whole_word_masking:
            # recipe validation has checked that the modality declares word_continuations
            is_continuation[torch.tensor(modality.continuation_token_ids(), dtype=torch.int64)] = True
        self.register_buffer("is_continuation", is_continuation, persistent=False)
        self.head = LMHead(encoder.feature_dim, encoder.get_input_embeddings())

    def eligible(self, batch: Batch) -> Tensor:
        """``bool [B, L]``: real tokens that are not special tokens."""
        return batch["attention_mask"].bool() & ~self.is_special[batch["input_ids"]]

    def corrupt(self, batch: Batch, generator: torch.Generator | None = None) -> tuple[Batch, Tensor]:
        """``(batch with corrupted input_ids, selected bool [B, L])``."""
        input_ids = batch["input_ids"]
        eligible = self.eligible(batch)
        word_starts = (
            word_start_positions(input_ids, eligible, self.is_continuation) if self.params.whole_word_masking else None
        )
        corrupted, selected = mask_tokens(
            input_ids,
            eligible,
            mask_token_id=self.mask_token_id,
            replacement_ids=self.replacement_ids,
            mask_probability=self.params.mask_probability,
            mask_token_ratio=self.params.mask_token_ratio,
            random_token_ratio=self.params.random_token_ratio,
            word_starts=word_starts,
            generator=generator,
        )
        return {**batch, "input_ids": corrupted}, selected

    def _loss(self, batch: Batch, encoder: Encoder, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
        corrupted, selected = self.corrupt(batch, generator)
        tokens = encoder(corrupted).tokens
        if tokens is None:
            raise ValueError(f"mlm objective needs token features; {type(encoder).__name__} returned none")
        # Only selected positions go through the vocabulary-sized decoder (the expensive part).
        logits = self.head(tokens[selected]).float()
        targets = batch["input_ids"][selected]
        if targets.numel() == 0:
            zero = tokens.sum() * 0.0  # keeps the graph connected so backward still works
            return zero, zero.detach(), targets
        loss = F.cross_entropy(logits, targets)
        correct = (logits.argmax(dim=-1) == targets).float().mean()
        return loss, correct, targets

    def forward(self, views: list[Batch], encoder: Encoder) -> ObjectiveOutput:
        loss, accuracy, targets = self._loss(views[0], encoder, None)
        return ObjectiveOutput(
            loss=loss, metrics={"mlm_accuracy": accuracy.detach(), "mlm_masked_tokens": float(targets.numel())}
        )

    def _held_out_generator(self, batch: Batch) -> torch.Generator:
        # Seeded from the batch contents, so each held-out batch gets the same mask in every
        # run and at every evaluation, whatever order batches arrive in.
        seed = self.params.held_out_seed + int(batch["input_ids"].sum().item())
        return torch.Generator(device=batch["input_ids"].device).manual_seed(seed)

    @torch.no_grad()
    def held_out_metrics(self, batch: Batch, encoder: Encoder) -> dict[str, float]:
        """``mlm_accuracy`` and ``mlm_loss`` (mean cross-entropy; perplexity = exp) under fixed masks."""
        loss, accuracy, targets = self._loss(batch, encoder, self._held_out_generator(batch))
        if targets.numel() == 0:
            return {}
        return {"mlm_accuracy": float(accuracy), "mlm_loss": float(loss)}

    @torch.no_grad()
    def evaluate(self, encoder: Encoder, modality: Modality, batch_size: int = 64) -> dict[str, float] | None:
        """Token-weighted held-out masked accuracy, loss and perplexity (up to ``report_max_samples``)."""
        dataset = self._report_samples(modality)
        if dataset is None:
            return None

        def figures(batch: Batch) -> tuple[Tensor, Tensor, int]:
            loss, accuracy, targets = self._loss(batch, encoder, self._held_out_generator(batch))
            return loss, accuracy, targets.numel()

        total_loss, total_correct, total = token_weighted_totals(encoder, modality, dataset, batch_size, figures)
        if total == 0:
            return None
        return {
            "accuracy": total_correct / total,
            "loss": total_loss / total,
            "perplexity": math.exp(total_loss / total),
            "masked_tokens": total,
        }

    @torch.no_grad()
    def unigram_baseline(self, modality: Modality, batch_size: int = 64) -> dict[str, float] | None:
        """Predict every masked token from training-set token frequencies (add-one smoothed).

        Uses the same fixed held-out masks as :meth:`held_out_metrics`; the prediction ignores
        the input, so its accuracy is the frequency of the most common token among targets.
        """
        held_out = self._report_samples(modality)
        if held_out is None:
            return None
        counts = unigram_counts(modality.train_dataset(), self.vocab_size, self.is_special.cpu())
        log_probs = torch.log(counts / counts.sum())
        best = int(counts.argmax())
        total_nll, correct, total = 0.0, 0, 0
        for batch in DataLoader(held_out, batch_size=batch_size, shuffle=False, collate_fn=modality.collate):
            batch = {k: v.to(self.is_special.device) for k, v in batch.items()}
            _, selected = self.corrupt(batch, self._held_out_generator(batch))
            targets = batch["input_ids"][selected].cpu()
            total_nll -= float(log_probs[targets].sum())
            correct += int((targets == best).sum())
            total += targets.numel()
        if total == 0:
            return None
        return {"accuracy": correct / total, "loss": total_nll / total, "perplexity": math.exp(total_nll / total)}

    def _report_samples(self, modality: Modality) -> Any:
        """The held-out samples the report uses: the first ``report_max_samples``, or ``None`` if there are none."""
        dataset = modality.held_out_dataset()
        if dataset is None or len(dataset) == 0:
            return None
        limit = self.params.report_max_samples
        return dataset if limit is None or len(dataset) <= limit else Subset(dataset, range(limit))

    def report(self, run_dir: Path | None, encoder: Encoder, modality: Modality) -> dict[str, Any]:
        """Held-out masked accuracy/perplexity beside a unigram-frequency and a uniform baseline.

        Also writes ``run_dir/mlm_masked_samples.txt`` (see :meth:`masked_examples`) for the run report.
        """
        examples = self.masked_examples(encoder, modality)
        if run_dir is not None and examples is not None:
            (Path(run_dir) / MASKED_SAMPLES_FILE).write_text(examples, encoding="utf-8")
        uniform = {"accuracy": 1.0 / len(self.replacement_ids), "perplexity": float(len(self.replacement_ids))}
        return {
            "held_out": self.evaluate(encoder, modality),
            "unigram_baseline": self.unigram_baseline(modality),
            "uniform_baseline": uniform,
        }

    @torch.no_grad()
    def masked_examples(self, encoder: Encoder, modality: Modality, count: int = 4) -> str | None:
        """The first ``count`` held-out samples as the model sees them (fixed held-out masks), the
        originals and the model's guesses at the selected positions, as text; ``None`` when the
        modality has no text form (:meth:`sslhub.Modality.decode_sample` gives ``None``) or no
        held-out samples.
        """
        dataset = self._report_samples(modality)
        if dataset is None:
            return None
        decode = modality.decode_sample
        device = next(encoder.parameters()).device
        batch = modality.collate([dataset[index] for index in range(min(count, len(dataset)))])
        if decode(batch, 0) is None:
            return None
        batch = modality.on_device({k: v.to(device) for k, v in batch.items()})
        corrupted, selected = self.corrupt(batch, self._held_out_generator(batch))
        was_training = encoder.training
        encoder.eval()
        tokens = encoder(corrupted).tokens
        encoder.train(was_training)
        guessed = batch["input_ids"].clone()
        if tokens is not None and selected.any():
            guessed[selected] = self.head(tokens[selected]).argmax(dim=-1)
        lines = []
        for row in range(batch["input_ids"].shape[0]):
            right = int((guessed[row][selected[row]] == batch["input_ids"][row][selected[row]]).sum())
            lines += [
                f"sample {row + 1} ({int(selected[row].sum())} tokens selected, {right} guessed right)",
                f"  model input: {decode(corrupted, row)}",
                f"  original:    {decode(batch, row)}",
                f"  model guess: {decode({**batch, 'input_ids': guessed}, row)}",
            ]
        return "\n".join(lines) + "\n"


_COUNT_BLOCK = 1 << 22


def unigram_counts(dataset: Sequence[Batch], vocab_size: int, is_special: Tensor) -> Tensor:
    """Add-one smoothed counts ``float64 [V]`` of non-special tokens in ``dataset`` (specials get 0).

    Args:
        dataset: samples with ``input_ids`` (and ``attention_mask``).
        vocab_size: ``V``.
        is_special: ``bool [V]``.
    """
    ids = getattr(dataset, "ids", None)  # TokenSequences keeps all ids flat: count them in blocks
    if ids is not None:
        # Blocks keep the int64 copy bincount needs small when ``ids`` is a memory-mapped store.
        totals = np.zeros(vocab_size, dtype=np.int64)
        for start in range(0, len(ids), _COUNT_BLOCK):
            totals += np.bincount(ids[start : start + _COUNT_BLOCK], minlength=vocab_size)[:vocab_size]
        counts = torch.from_numpy(totals).double()
    else:
        counter: Counter[int] = Counter()
        for sample in dataset:
            counter.update(sample["input_ids"][sample["attention_mask"].bool()].tolist())
        counts = torch.zeros(vocab_size, dtype=torch.float64)
        for token, n in counter.items():
            counts[token] = n
    counts = counts[:vocab_size] + 1.0
    counts[is_special] = 0.0
    return counts
