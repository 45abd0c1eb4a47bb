"""Cross-modal retrieval and zero-shot classification scores, with their chance levels.

Everything works on precomputed, L2-normalised embeddings, so it is usable without a model.
A retrieved item counts as correct when it is *relevant* to the query: for the pair level,
the query's own partner (captions are compared as distinct sentences, so every image with
that exact caption is a partner); for the class level, any item of the query's class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def recall_at_k(similarity: Tensor, relevant: Tensor, ks: Sequence[int]) -> dict[int, float]:
    """Share of queries with at least one relevant item among their ``k`` most similar.

    Args:
        similarity: ``[Q, C]`` query-candidate scores (higher is closer).
        relevant: ``bool [Q, C]``.
        ks: cut-offs, each in ``1..C``.

    Returns:
        ``{k: recall}``.
    """
    if similarity.shape != relevant.shape or similarity.ndim != 2:
        raise ValueError(f"similarity {list(similarity.shape)} and relevant {list(relevant.shape)} must be [Q, C]")
    candidates = similarity.shape[1]
    if not ks or any(not 1 <= k <= candidates for k in ks):
        raise ValueError(f"every k must be in 1..{candidates}, got {list(ks)}")
    top = similarity.topk(max(ks), dim=1).indices
    hits = relevant.gather(1, top)
    return {k: float(hits[:, :k].any(1).float().mean()) for k in ks}


def chance_recall_at_k(relevant: Tensor, ks: Sequence[int]) -> dict[int, float]:
    """Expected :func:`recall_at_k` of a random ranking: per query with ``m`` relevant of ``C``,
    ``1 - C(C - m, k) / C(C, k)``, averaged over the queries."""
    candidates = relevant.shape[1]
    counts = relevant.sum(1).double()
    result = {}
    for k in ks:
        none = torch.ones_like(counts)
        for i in range(k):
            none = none * ((candidates - counts - i).clamp_min(0) / (candidates - i))
        result[k] = float((1 - none).mean())
    return result


def distinct_captions(keys: Tensor) -> Tensor:
    """Index of the first pair holding each distinct caption, in order of first appearance ``[U]``."""
    unique, inverse = torch.unique(keys, return_inverse=True)
    positions = torch.arange(len(keys), device=keys.device)
    first = torch.full((len(unique),), len(keys), dtype=torch.int64, device=keys.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    return first.sort().values


def retrieval_scores(
    image: Tensor,
    text: Tensor,
    keys: Tensor,
    labels: Tensor | None = None,
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Image->text and text->image recall@k at the pair level and (with labels) the class level.

    Identical captions have identical embeddings, so the candidates and queries on the text
    side are the ``U`` *distinct* captions (otherwise an image's top 5 would be five copies
    of one sentence). Image->text: each of the ``N`` images ranks the ``U`` captions; a caption
    is relevant if it is the image's own (pair level) or has its class (class level).
    Text->image: each distinct caption ranks the ``N`` images; relevant are the images it
    captions (pair level) or of its class. Cut-offs above the number of candidates are skipped.

    Args:
        image, text: ``[N, D]`` L2-normalised embeddings of ``N`` pairs.
        keys: ``int64 [N]`` caption identity (:func:`sslhub_multimodal.losses.caption_keys`).
        labels: ``int64 [N]`` classes, or ``None``.
        ks: cut-offs.

    Returns:
        keys like ``image_to_text_recall@1``, ``text_to_image_class_recall@5``, each with a
        ``chance/`` twin (the expected value of a random ranking).
    """
    first = distinct_captions(keys)
    similarity = image @ text[first].T  # [N images, U captions]
    levels = {"": keys[:, None] == keys[first][None, :]}
    if labels is not None:
        levels["class_"] = labels[:, None] == labels[first][None, :]
    scores: dict[str, float] = {}
    for level, relevant in levels.items():
        for direction, sim, rel in (
            ("image_to_text", similarity, relevant),
            ("text_to_image", similarity.T, relevant.T),
        ):
            usable = [k for k in ks if k <= sim.shape[1]]
            if not usable:
                continue
            for k, value in recall_at_k(sim, rel, usable).items():
                scores[f"{direction}_{level}recall@{k}"] = round(value, 4)
            for k, value in chance_recall_at_k(rel, usable).items():
                scores[f"chance/{direction}_{level}recall@{k}"] = round(value, 4)
    return scores


def zero_shot_accuracy(image: Tensor, class_embeddings: Tensor, labels: Tensor) -> float:
    """Accuracy of labelling each image with the class whose prompt embedding is most similar.

    Shapes:
        image: ``[N, D]``; class_embeddings: ``[K, D]`` (one per class, normalised); labels: ``[N]``.
    """
    if image.shape[1] != class_embeddings.shape[1]:
        raise ValueError(f"image [N, {image.shape[1]}] and class embeddings [K, {class_embeddings.shape[1]}] differ")
    predicted = (image @ class_embeddings.T).argmax(dim=1)
    return float((predicted == labels).float().mean())
