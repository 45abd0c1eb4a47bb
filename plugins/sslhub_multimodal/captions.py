"""Honest captions for the embedded handwritten digits, from the class label and a template.

Each digit image gets one caption, chosen deterministically from a list of templates and
filled with the digit as a word (``seven``), a numeral (``7``) and its parity (``odd``).
Training images only ever see the :data:`TRAIN_TEMPLATES`; held-out images are captioned
with :data:`EVAL_TEMPLATES`, phrasings the model never trained on, so retrieval on the
held-out split measures whether image and text embeddings agree on the digit rather than
whether a memorised sentence is recognised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

#: phrasings of the training captions (slots: ``{word}``, ``{digit}``, ``{parity}``).
TRAIN_TEMPLATES = (
    "the number {digit} written by hand",
    "a scanned image of a {digit}",
    "a low resolution photo of the digit {word}",
    "a small grayscale picture of a handwritten {word}",
    "someone wrote the number {word}",
    "an {parity} digit: {digit}",
    "a blurry handwritten {digit}",
    "the figure {word} from a handwriting form",
    "{word}",
    "a {digit}",
    "an {parity} number, {word}",
    "the numeral {digit} in pencil",
    "a tiny image of the handwritten number {digit}",
    "a picture showing a {word}",
)

#: phrasings reserved for the held-out captions (never seen in training).
EVAL_TEMPLATES = (
    "a handwritten digit {word}",
    "this is a {digit} drawn with a pen",
    "the {parity} number {word} in handwriting",
)


def fill_template(template: str, label: int) -> str:
    """``template`` with the slots of digit ``label`` (0..9) filled in.

    Raises:
        ValueError: ``label`` outside 0..9, or a slot other than word/digit/parity.
    """
    if not 0 <= label <= 9:
        raise ValueError(f"digit label must be in 0..9, got {label}")
    try:
        return template.format(word=DIGIT_WORDS[label], digit=str(label), parity="even" if label % 2 == 0 else "odd")
    except KeyError as exc:
        raise ValueError(f"caption template {template!r} uses unknown slot {exc}; use word, digit, parity") from None


def digit_captions(
    labels: Sequence[int] | np.ndarray,
    templates: Sequence[str],
    seed: int,
) -> list[str]:
    """One caption per label, each from a template drawn with ``seed`` (deterministic).

    Templates are drawn so that every class uses every template about equally often
    (a shuffled round-robin per class), not just on average.

    Args:
        labels: digit classes ``[N]``.
        templates: phrasings to draw from (non-empty).
        seed: seed of the draw.

    Returns:
        ``N`` captions, in the order of ``labels``.
    """
    if not templates:
        raise ValueError("digit_captions needs at least one template")
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    choice = np.zeros(len(labels), dtype=np.int64)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        round_robin = np.arange(len(members)) % len(templates)
        choice[members] = rng.permutation(round_robin)
    return [fill_template(templates[c], int(label)) for c, label in zip(choice, labels, strict=True)]
