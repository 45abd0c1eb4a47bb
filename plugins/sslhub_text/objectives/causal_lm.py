"""``causal_lm``: next-token prediction (GPT-style autoregressive language modelling).

A causal encoder reads the (packed) token sequence and the state at position ``t`` predicts
the token at ``t + 1`` through a head tied to the input embedding table (plus a bias)::

    loss = - mean_{b, t : mask[b, t+1]} log p(x_{b, t+1} | x_{b, <=t})

Every real token after the first is a target, [SEP] included (in packed samples it marks
where a document ends); padding never is. The loss is a masked mean over all positions (no
boolean indexing), so a training step never waits for the device. The encoder must be causal
(``provides=["causal"]``; ``sslhub validate`` refuses others): a bidirectional one would read
the token it is asked to predict.

Two options make a training step cheaper where the loss rides beside another objective:
``rows_fraction`` runs the encoder for this loss on the first share of the batch's texts only,
and ``positions_fraction`` scores a random share of each row's positions (drawn among its real
targets first), so the ``[B, L, V]`` head output shrinks to ``[B', K, V]``. Held-out figures
always use every text and position.

The report gives held-out perplexity and next-token accuracy of the trained model beside the
same objective on the random-init encoder, a unigram model (training-set target frequencies,
add-one smoothed) and the uniform distribution.

References:
    - Radford et al., "Language Models are Unsupervised Multitask Learners" (GPT-2), 2019.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from sslhub import Batch, BuildContext, Encoder, Modality, Objective, ObjectiveOutput, Params
from sslhub_text.objectives.held_out import token_weighted_totals


class CausalLMParams(Params):
    """Parameters of the ``causal_lm`` objective."""

    report_max_samples: int | None = Field(
        20000,
        gt=0,
        description="The end-of-run report (held-out perplexity and accuracy, baselines) uses at most the first "
        "this many held-out samples; null for all.",
    )
    rows_fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Training steps compute the loss on the first ceil(fraction * B) texts of each batch only "
        "(the encoder runs on those alone); 1.0: every text.",
    )
    positions_fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Training steps score ceil(fraction * (L - 1)) positions of each row, drawn at random among "
        "its real targets first; 1.0: every position.",
    )


def next_token_targets(input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(targets [B, L-1], weights [B, L-1] float)``: the token after each position and whether it is real."""
    return input_ids[:, 1:], attention_mask[:, 1:].float()


def sample_positions(target_weights: Tensor, count: int) -> Tensor:
    """``int64 [B, count]``: positions ``t`` (of ``0 .. L-2``) whose next token is scored, per row.

    Args:
        target_weights: ``[B, L-1]`` float, 1 where position ``t`` has a real next token (the
            weights :func:`next_token_targets` returns).
        count: positions drawn per row.

    Each row draws ``count`` distinct positions at random, those with a real target before any
    other, so a row with fewer real targets than ``count`` gets all of them plus padding
    positions (weighted 0 by the loss). A fixed count per row keeps the shapes static: no value
    is read back from the device.
    """
    scores = torch.rand(target_weights.shape, device=target_weights.device) + target_weights  # real: [1, 2)
    return scores.topk(min(count, target_weights.shape[1]), dim=1).indices


def sampled_causal_lm_loss(
    hidden: Tensor, head: nn.Module, input_ids: Tensor, attention_mask: Tensor, count: int
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`causal_lm_loss` over ``count`` positions per row drawn by :func:`sample_positions`.

    Args:
        hidden: ``[B, L, D]`` token states.
        head: ``[..., D] -> [..., V]`` logits.
        input_ids: ``int64 [B, L]``.
        attention_mask: ``[B, L]``, 1 at real tokens (right padding).
        count: positions scored per row.

    Returns:
        ``(loss, accuracy, count)`` as :func:`causal_lm_loss`, over the drawn real targets.
    """
    targets, weights = next_token_targets(input_ids, attention_mask)
    positions = sample_positions(weights, count)
    states = hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    return weighted_cross_entropy(head(states).float(), targets.gather(1, positions), weights.gather(1, positions))


def weighted_cross_entropy(logits: Tensor, targets: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, accuracy, count)``, 0-d: weighted mean cross-entropy and argmax accuracy.

    Args:
        logits: ``[B, K, V]``.
        targets: ``int64 [B, K]``.
        weights: ``[B, K]`` float, 1 at real targets, 0 elsewhere.

    Both are 0 when no weight is set; ``count`` is the sum of the weights.
    """
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    count = weights.sum()
    loss = (nll.view_as(weights) * weights).sum() / count.clamp_min(1.0)
    correct = (logits.detach().argmax(-1) == targets).float()
    return loss, (correct * weights).sum() / count.clamp_min(1.0), count


def causal_lm_loss(logits: Tensor, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Cross-entropy of the prediction at ``t`` against the token at ``t + 1``, over real targets.

    Args:
        logits: ``[B, L, V]`` from positions ``0 .. L-1`` (the last one has no target).
        input_ids: ``int64 [B, L]``.
        attention_mask: ``[B, L]``, 1 at real tokens (right padding).

    Returns:
        ``(loss, accuracy, count)``, 0-d: mean negative log-likelihood and argmax accuracy over
        the ``count`` real targets (0 for both when there are none).
    """
    targets, weights = next_token_targets(input_ids, attention_mask)
    return weighted_cross_entropy(logits[:, :-1].float(), targets, weights)


class TiedNextTokenHead(nn.Module):
    """``[..., D] -> [..., V]`` logits: the encoder's embedding table ``[V, D]`` transposed, plus a bias.

    The embedding module is a reference, not a submodule (it belongs to the encoder), so an
    optimizer over encoder and objective parameters sees it once.
    """

    def __init__(self, embeddings: nn.Embedding):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(embeddings.weight.shape[0]))
        object.__setattr__(self, "_embeddings", embeddings)

    def forward(self, hidden: Tensor) -> Tensor:
        return F.linear(hidden, self._embeddings.weight, self.bias)


class CausalLMObjective(Objective):
    """Next-token prediction on a causal encoder's token features, with a tied head.

    Args:
        params: :class:`CausalLMParams`.
        context: ``context.encoder`` must be causal and have ``get_input_embeddings()``;
            ``context.modality.info()`` gives ``vocab_size`` and ``pad_token_id``.
    """

    num_views = 1
    report_takes_baseline = True

    def __init__(self, params: CausalLMParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params or CausalLMParams()
        encoder = context.encoder if context is not None else None
        if not isinstance(encoder, Encoder) or context is None or context.modality is None:
            raise ValueError("causal_lm needs one built encoder and the text modality (context.encoder, .modality)")
        if "causal" not in encoder.provides:
            raise ValueError(
                f"causal_lm needs a causal encoder; {type(encoder).__name__} does not declare provides 'causal'"
            )
        if "token_embeddings" not in getattr(encoder, "provides", ()):
            raise ValueError(
                f"causal_lm ties its head to the token embeddings; {type(encoder).__name__} does not declare "
                "provides 'token_embeddings'"
            )
        info = context.modality.info()
        self.vocab_size = int(info.needed("vocab_size", "causal_lm objective"))
        self.pad_token_id = int(info.needed("pad_token_id", "causal_lm objective"))
        self.head = TiedNextTokenHead(encoder.get_input_embeddings())

    def _loss(self, batch: Batch, encoder: Encoder, sampled: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """``(loss, accuracy, count)`` on every text and position, or (``sampled``) on the share the params set."""
        if sampled and self.params.rows_fraction < 1.0:
            rows = math.ceil(self.params.rows_fraction * batch["input_ids"].shape[0])
            batch = {key: value[:rows] for key, value in batch.items()}
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        tokens = encoder(batch).tokens
        if tokens is None:
            raise ValueError(f"causal_lm needs token features; {type(encoder).__name__} returned none")
        if sampled and self.params.positions_fraction < 1.0:
            count = math.ceil(self.params.positions_fraction * (input_ids.shape[1] - 1))
            return sampled_causal_lm_loss(tokens, self.head, input_ids, attention_mask, count)
        return causal_lm_loss(self.head(tokens), input_ids, attention_mask)

    def forward(self, views: list[Batch], encoder: Encoder) -> ObjectiveOutput:
        loss, accuracy, _ = self._loss(views[0], encoder, sampled=True)
        return ObjectiveOutput(loss=loss, metrics={"next_token_accuracy": accuracy.detach()})

    @torch.no_grad()
    def held_out_metrics(self, batch: Batch, encoder: Encoder) -> dict[str, float]:
        """``next_token_accuracy`` and ``loss`` (mean cross-entropy; perplexity = exp) on one batch."""
        loss, accuracy, count = self._loss(batch, encoder)
        return {"next_token_accuracy": float(accuracy), "loss": float(loss)} if count > 0 else {}

    @torch.no_grad()
    def evaluate(self, encoder: Encoder, modality: Modality, batch_size: int = 64) -> dict[str, float] | None:
        """Token-weighted held-out ``accuracy``, ``loss``, ``perplexity`` and ``targets`` (their count)."""
        dataset = self._report_samples(modality)
        if dataset is None:
            return None

        def figures(batch: Batch) -> tuple[Tensor, Tensor, float]:
            loss, accuracy, count = self._loss(batch, encoder)
            return loss, accuracy, float(count)

        return summarize(*token_weighted_totals(encoder, modality, dataset, batch_size, figures))

    @torch.no_grad()
    def unigram_baseline(self, modality: Modality, batch_size: int = 256) -> dict[str, float] | None:
        """Every next token predicted from training-set target frequencies (add-one smoothed, padding excluded)."""
        held_out = self._report_samples(modality)
        if held_out is None:
            return None
        counts = target_counts(modality.train_dataset(), self.vocab_size)
        counts[self.pad_token_id] = 0.0
        # padding (probability 0) is never a target: 0 there, not -inf, keeps weight 0 * log p finite
        log_probs = torch.log(counts / counts.sum()).masked_fill(counts == 0, 0.0)
        best = int(counts.argmax())
        total_nll, correct, total = 0.0, 0.0, 0.0
        for batch in DataLoader(held_out, batch_size=batch_size, shuffle=False, collate_fn=modality.collate):
            targets, weights = next_token_targets(batch["input_ids"], batch["attention_mask"])
            total_nll -= float((log_probs[targets] * weights).sum())
            correct += float(((targets == best).float() * weights).sum())
            total += float(weights.sum())
        return summarize(total_nll, correct, total)

    def _report_samples(self, modality: Modality) -> Dataset | None:
        dataset = modality.held_out_dataset()
        if dataset is None or len(dataset) == 0:
            return None
        limit = self.params.report_max_samples
        return dataset if limit is None or len(dataset) <= limit else Subset(dataset, range(limit))

    def report(
        self, run_dir: Path, encoder: Encoder, modality: Modality, baseline: tuple[Any, Encoder] | None = None
    ) -> dict[str, Any]:
        """Held-out perplexity and next-token accuracy: trained, random init, unigram and uniform."""
        vocabulary = self.vocab_size - 1  # every id but padding
        return {
            "held_out": self.evaluate(encoder, modality),
            "random_init": None if baseline is None else baseline[0].evaluate(baseline[1], modality),
            "unigram_baseline": self.unigram_baseline(modality),
            "uniform_baseline": {"accuracy": 1.0 / vocabulary, "perplexity": float(vocabulary)},
        }


def summarize(total_nll: float, total_correct: float, total: float) -> dict[str, float] | None:
    """``{accuracy, loss, perplexity, targets}`` from sums over ``total`` targets (``None`` when there are none)."""
    if total == 0:
        return None
    return {
        "accuracy": total_correct / total,
        "loss": total_nll / total,
        "perplexity": math.exp(total_nll / total),
        "targets": int(total),
    }


_COUNT_BLOCK = 1 << 22


def target_counts(dataset: Dataset, vocab_size: int) -> Tensor:
    """Add-one smoothed counts ``float64 [V]`` of the next-token targets in ``dataset`` (all tokens but each sample's first).

    Args:
        dataset: samples with ``input_ids`` and ``attention_mask``; a ``TokenSequences``
            (flat ``ids`` and ``offsets``) is counted in blocks without building samples.
        vocab_size: ``V``.
    """
    ids, offsets = getattr(dataset, "ids", None), getattr(dataset, "offsets", None)
    totals = np.zeros(vocab_size, dtype=np.int64)
    if ids is not None and offsets is not None:
        for start in range(0, len(ids), _COUNT_BLOCK):
            totals += np.bincount(ids[start : start + _COUNT_BLOCK], minlength=vocab_size)[:vocab_size]
        firsts = np.asarray(ids[offsets[:-1][offsets[:-1] < offsets[1:]]], dtype=np.int64)
        totals -= np.bincount(firsts, minlength=vocab_size)[:vocab_size]
    else:
        for index in range(len(dataset)):
            sample = dataset[index]
            real = sample["input_ids"][sample["attention_mask"].bool()][1:]
            totals += np.bincount(real.numpy(), minlength=vocab_size)[:vocab_size]
    return torch.from_numpy(totals).double() + 1.0
