"""VQ-VAE's EMA codebook under two real gloo processes: its statistics are summed over ranks.

Each rank quantises its half of the same batches; the codebook must end as one process's
that saw every batch whole (the counts and sums are all-reduced before the EMA update), and,
when dead codes restart, the same on both ranks (the restart vectors come from rank 0).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sslhub_autoencoder.quantizer import VectorQuantizer

CODES, DIM, BATCH, STEPS = 8, 4, 32, 5


def batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    # two clusters of vectors: some codes win nothing and, with a threshold, restart
    return [
        torch.randn(BATCH, DIM, generator=generator) + 3.0 * (torch.arange(BATCH)[:, None] % 2) for _ in range(STEPS)
    ]


def train_codebook(rank: int, world: int, dead_code_threshold: float) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)  # the same initial codebook everywhere
    quantizer = VectorQuantizer(CODES, DIM, decay=0.8, dead_code_threshold=dead_code_threshold).train()
    share = BATCH // world
    with torch.enable_grad():
        for batch in batches():
            quantizer(batch[rank * share : (rank + 1) * share])
    return {name: buffer.clone() for name, buffer in quantizer.named_buffers()}


def _in_rank(rank: int, init_file: str, dead_code_threshold: float, results: dict) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        results[rank] = train_codebook(rank, 2, dead_code_threshold)
    finally:
        dist.destroy_process_group()


def two_ranks(tmp_path, dead_code_threshold: float) -> dict[int, dict[str, torch.Tensor]]:
    results = mp.Manager().dict()
    mp.spawn(_in_rank, args=(str(tmp_path / "init"), dead_code_threshold, results), nprocs=2, join=True)
    return dict(results)


def test_two_ranks_with_half_batches_train_the_codebook_of_one_process_with_whole_batches(tmp_path):
    ranks = two_ranks(tmp_path, dead_code_threshold=0.0)
    single = train_codebook(0, 1, dead_code_threshold=0.0)
    assert not torch.equal(single["codebook"], train_codebook(0, 2, 0.0)["codebook"]), "half a batch differs"
    for rank in (0, 1):
        for name, value in single.items():
            torch.testing.assert_close(ranks[rank][name], value, rtol=1e-5, atol=1e-6, msg=f"rank {rank} {name}")


def test_dead_code_restarts_keep_the_ranks_codebooks_identical(tmp_path):
    ranks = two_ranks(tmp_path, dead_code_threshold=1.0)
    start = VectorQuantizer(CODES, DIM)  # only for the shape
    assert ranks[0]["codebook"].shape == start.codebook.shape
    for name in ranks[0]:
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    counts = ranks[0]["ema_count"]
    assert (counts == 1.0).any(), "some code was restarted (its count reset to the threshold)"
