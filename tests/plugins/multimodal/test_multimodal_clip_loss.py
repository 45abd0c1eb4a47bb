"""CLIP's symmetric InfoNCE against a hand computation; temperature clip; retrieval scores."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from sslhub_multimodal.losses import CLIPLoss, caption_keys, clip_loss
from sslhub_multimodal.retrieval import chance_recall_at_k, recall_at_k, retrieval_scores, zero_shot_accuracy


def hand_clip(image: torch.Tensor, text: torch.Tensor, scale: float, positives=None) -> float:
    """The CLIP paper's pseudo-code as loops: cosine logits times the scale, cross-entropy over
    texts for each image and over images for each text, the two averaged. With ``positives``
    the target of a row is uniform over its positive columns."""
    n = image.shape[0]
    image = [v / v.norm() for v in image.double()]
    text = [v / v.norm() for v in text.double()]
    positives = positives if positives is not None else torch.eye(n, dtype=torch.bool)
    total = 0.0
    for queries, candidates in ((image, text), (text, image)):
        for i in range(n):
            logits = [scale * float(queries[i] @ candidates[j]) for j in range(n)]
            log_norm = math.log(sum(math.exp(x) for x in logits))
            targets = [j for j in range(n) if positives[i, j]]
            total += -sum(logits[j] - log_norm for j in targets) / len(targets)
    return total / (2 * n)


@pytest.mark.parametrize("temperature", [0.07, 0.5, 1.0])
def test_clip_loss_matches_hand_computation(temperature):
    torch.manual_seed(0)
    image, text = torch.randn(5, 4), torch.randn(5, 4)
    loss = CLIPLoss(temperature)(image, text)
    assert loss.item() == pytest.approx(hand_clip(image, text, 1 / temperature), rel=1e-5)
    # and the usual two cross-entropies over scaled cosine logits
    logits = F.normalize(image, dim=1) @ F.normalize(text, dim=1).T / temperature
    reference = (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.T, torch.arange(5))) / 2
    assert loss.item() == pytest.approx(float(reference), rel=1e-5)


def test_identical_captions_are_positives_of_each_other():
    torch.manual_seed(1)
    image, text = torch.randn(6, 3), torch.randn(6, 3)
    keys = torch.tensor([10, 11, 10, 12, 11, 10])
    positives = keys[:, None] == keys[None, :]
    loss = CLIPLoss(0.2)(image, text, keys)
    assert loss.item() == pytest.approx(hand_clip(image, text, 5.0, positives), rel=1e-5)
    assert loss.item() != pytest.approx(CLIPLoss(0.2)(image, text).item(), rel=1e-3)
    _, _, mask = CLIPLoss(0.2).logits_and_positives(image, text, keys)
    assert torch.equal(mask, positives)


def test_clip_loss_function_checks_arguments():
    logits = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="at least one True"):
        clip_loss(logits, logits, torch.zeros(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="same \\[B, N\\] shape"):
        clip_loss(logits, torch.zeros(3, 4), torch.eye(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="equal shapes"):
        CLIPLoss()(torch.zeros(3, 4), torch.zeros(3, 5))


def test_temperature_is_learned_in_log_space_and_clipped():
    loss_fn = CLIPLoss(0.07)
    assert loss_fn.log_logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert loss_fn.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        loss_fn.log_logit_scale.fill_(math.log(500.0))  # drifted above the clip
    assert loss_fn.logit_scale.item() == pytest.approx(100.0, rel=1e-6)
    assert loss_fn.temperature == pytest.approx(0.01, rel=1e-6)
    torch.manual_seed(0)
    image, text = torch.randn(4, 3), torch.randn(4, 3)
    assert loss_fn(image, text).item() == pytest.approx(hand_clip(image, text, 100.0), rel=1e-5)
    # the scale is a parameter with a gradient below the clip, and none above it
    below = CLIPLoss(0.07)
    below(image, text).backward()
    assert below.log_logit_scale.grad is not None and float(below.log_logit_scale.grad) != 0
    loss_fn(image, text).backward()
    assert float(loss_fn.log_logit_scale.grad) == 0
    fixed = CLIPLoss(0.07, learnable_temperature=False)
    assert not any(True for _ in fixed.parameters())
    with pytest.raises(ValueError, match="above max_logit_scale 100"):
        CLIPLoss(0.005)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        CLIPLoss(0.0)


def test_caption_keys_ignore_padding_and_tell_captions_apart():
    ids = torch.tensor([[2, 5, 6, 3, 0, 0], [2, 5, 6, 3, 0, 0], [2, 6, 5, 3, 0, 0], [2, 5, 6, 7, 3, 0]])
    mask = (torch.arange(6) < torch.tensor([[4], [4], [4], [5]])).long()
    keys = caption_keys(ids, mask)
    assert keys[0] == keys[1] and len(set(keys.tolist())) == 3
    # the same caption padded to another length keeps its key
    assert caption_keys(ids[:1, :4], mask[:1, :4])[0] == keys[0]
    # pad id 0 as a real token differs from padding
    assert caption_keys(torch.tensor([[2, 0, 3]]), torch.ones(1, 3, dtype=torch.long)) != caption_keys(
        torch.tensor([[2, 3, 0]]), torch.tensor([[1, 1, 0]])
    )


# ------------------------------------------------------------------------------ retrieval
def test_recall_at_k_by_hand():
    similarity = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.7, 0.6, 0.1]])
    relevant = torch.eye(3, dtype=torch.bool)
    # row 0: best is 0 (hit); row 1: order 2, 1 -> hit at rank 2; row 2: order 0, 1, 2 -> rank 3
    assert recall_at_k(similarity, relevant, [1, 2, 3]) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: 1.0}
    with pytest.raises(ValueError, match="every k must be in 1..3"):
        recall_at_k(similarity, relevant, [4])


def test_chance_recall_equals_the_average_over_all_rankings():
    relevant = torch.tensor([[True, False, False, True, False], [False, False, True, False, False]])
    for k in (1, 2, 3):
        hits = []
        for order in itertools.permutations(range(5)):
            top = list(order[:k])
            hits.append([bool(relevant[q, top].any()) for q in range(2)])
        expected = torch.tensor(hits, dtype=torch.float64).mean()
        assert chance_recall_at_k(relevant, [k])[k] == pytest.approx(float(expected))


def test_retrieval_scores_use_distinct_captions():
    # 4 pairs, captions 0 and 2 identical; perfect embeddings: image i equals its caption's vector
    text = F.normalize(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0], [0, 0, 1.0]]), dim=1)
    keys = torch.tensor([7, 8, 7, 9])
    labels = torch.tensor([0, 1, 0, 1])
    scores = retrieval_scores(text.clone(), text, keys, labels, ks=[1, 5])
    assert scores["image_to_text_recall@1"] == 1.0 and scores["text_to_image_recall@1"] == 1.0
    assert "image_to_text_recall@5" not in scores  # only 3 distinct captions
    assert scores["text_to_image_class_recall@1"] == 1.0
    # chance: each image has 1 relevant caption among 3 distinct ones
    assert scores["chance/image_to_text_recall@1"] == pytest.approx(1 / 3, abs=1e-4)
    shuffled = retrieval_scores(text.flip(0), text, keys, labels, ks=[1])
    assert shuffled["image_to_text_recall@1"] < 1.0


def test_zero_shot_accuracy():
    classes = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    images = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert zero_shot_accuracy(images, classes, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)


# ------------------------------------------------------------------------------ across ranks
def _distributed_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        image, text, keys = _shared_batch()
        local = slice(rank * 4, rank * 4 + 4)
        a = image[local].clone().requires_grad_(True)
        b = text[local].clone().requires_grad_(True)
        loss_fn = CLIPLoss(0.1)
        loss = loss_fn(a, b, keys[local])
        loss.backward()
        torch.save(
            {"loss": loss.detach(), "image": a.grad, "text": b.grad, "scale": loss_fn.log_logit_scale.grad},
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def _shared_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    image, text = torch.randn(8, 5, generator=generator), torch.randn(8, 5, generator=generator)
    keys = torch.tensor([1, 2, 3, 1, 4, 5, 2, 6])  # duplicates within and across the two ranks
    return image, text, keys


def test_negatives_and_caption_keys_are_gathered_across_ranks(tmp_path):
    """Two gloo processes with half the batch each give the one-process loss and gradients."""
    import torch.multiprocessing as mp

    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    image, text, keys = _shared_batch()
    image.requires_grad_(True)
    text.requires_grad_(True)
    loss_fn = CLIPLoss(0.1)
    full = loss_fn(image, text, keys)
    full.backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, full.detach())
    # gather_with_grad sums embedding gradients over ranks and DDP averages: divide by the world size
    torch.testing.assert_close(torch.cat([r["image"] for r in ranks]) / 2, image.grad)
    torch.testing.assert_close(torch.cat([r["text"] for r in ranks]) / 2, text.grad)
    torch.testing.assert_close((ranks[0]["scale"] + ranks[1]["scale"]) / 2, loss_fn.log_logit_scale.grad)
