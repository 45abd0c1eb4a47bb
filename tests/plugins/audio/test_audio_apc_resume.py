"""APC: a run killed by SIGKILL and resumed ends with the weights of an uninterrupted run, bitwise."""

from __future__ import annotations

from pathlib import Path

import pytest
from resume_exactness import assert_resume_is_exact

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "audio_apc.yaml"


@pytest.mark.slow
def test_apc_resume_after_sigkill_is_exact(tmp_path: Path):
    assert_resume_is_exact(RECIPE, tmp_path, {"train.batch_size": "16"})
