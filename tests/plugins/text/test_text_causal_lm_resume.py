"""causal_lm: a run killed by SIGKILL and resumed ends with the weights of an uninterrupted run, bitwise.

The second run loads the tokenizer the first one trained, so the comparison holds even for a
tokenizer trained from a one-shot stream (see ``train_tokenizer``); a resumed run reuses its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from resume_exactness import assert_resume_is_exact

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "text_causal_lm.yaml"


def same_tokenizer(whole_run: Path) -> dict[str, str]:
    return {"data.tokenizer": f"{{type: local, path: {whole_run / 'tokenizer.json'}}}"}


@pytest.mark.slow
def test_causal_lm_resume_after_sigkill_is_exact(tmp_path: Path):
    assert_resume_is_exact(RECIPE, tmp_path, {"train.batch_size": "8"}, then=same_tokenizer)
