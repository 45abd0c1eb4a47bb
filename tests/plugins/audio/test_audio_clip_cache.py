"""The process-wide cache of rendered synthetic clips: shared per corpus, bounded in corpora."""

from __future__ import annotations

import pytest

from sslhub_audio import modality
from sslhub_audio.synthetic import SyntheticWords


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch):
    monkeypatch.setattr(modality, "_RENDERED_CLIPS", type(modality._RENDERED_CLIPS)())


def test_the_same_corpus_shares_one_cache():
    first = modality.rendered_clips(SyntheticWords(seed=0))
    first[3] = "a rendered clip"

    assert modality.rendered_clips(SyntheticWords(seed=0)) is first
    assert modality.rendered_clips(SyntheticWords(seed=1)) is not first


def test_only_the_most_recently_used_corpora_are_kept():
    corpora = [SyntheticWords(seed=s) for s in range(modality.RENDERED_CORPORA_KEPT + 2)]
    oldest = modality.rendered_clips(corpora[0])
    oldest[0] = "kept while in use"
    for corpus in corpora[1:]:
        modality.rendered_clips(corpus)
        modality.rendered_clips(corpora[1])  # used again: stays among the most recent

    assert len(modality._RENDERED_CLIPS) == modality.RENDERED_CORPORA_KEPT
    assert corpora[1] in modality._RENDERED_CLIPS and corpora[-1] in modality._RENDERED_CLIPS
    assert modality.rendered_clips(corpora[0]) == {}  # dropped: a new, empty cache
    assert oldest == {0: "kept while in use"}  # a dataset holding the old one still has it
