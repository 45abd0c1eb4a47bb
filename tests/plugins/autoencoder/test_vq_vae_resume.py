"""VQ-VAE: a run killed by SIGKILL and resumed ends with the weights, and the EMA codebook, of an
uninterrupted run, bitwise (the codebook and its statistics are buffers of the checkpointed model)."""

from __future__ import annotations

from pathlib import Path

import pytest
from resume_exactness import assert_resume_is_exact

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "vqvae_image.yaml"


@pytest.mark.slow
def test_vq_vae_resume_after_sigkill_is_exact(tmp_path: Path):
    assert_resume_is_exact(RECIPE, tmp_path, {"train.batch_size": "16"})
