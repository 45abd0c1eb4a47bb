"""``benchmarks/bench_step_overhead.py``: the aten operations the engine's step adds to a plain loop's.

Operation counts are deterministic, so they can be held here (timings never are).
"""

from __future__ import annotations

import pytest

#: what the engine's step may add: the logged values' detaches (views, no kernel), the loss
#: share it sums, the gradient norm (its finite check and logged ``grad_norm``) and the one read
ALLOWED_EXTRA_OPS = 10


@pytest.fixture
def overhead(benchmark_module):
    return benchmark_module("bench_step_overhead")


def test_the_engine_step_adds_few_operations_and_no_host_read(overhead):
    path = overhead.recipe_path("autoencoder_image")
    engine = overhead.ops_per_step(path, "engine", steps=2, batch_size=4)
    hand = overhead.ops_per_step(path, "hand", steps=2, batch_size=4)
    extra = overhead.extra_ops(engine, hand)
    assert 0 < sum(hand.values()) and sum(extra.values()) <= ALLOWED_EXTRA_OPS, extra
    # the loss and gradient norm come back in one read, as the plain loop reads its loss
    assert extra.get("_local_scalar_dense", 0) <= 1, extra
    # no pass over every gradient that the recipe did not ask for (no grad_clip here)
    assert "_foreach_mul_" not in extra, extra
