"""``benchmarks/bench_host_loading.py``: a row with finite, positive figures; a clear refusal for data it cannot time."""

from __future__ import annotations

import math

import pytest


def test_host_loading_row_for_an_image_recipe(benchmark_module):
    bench = benchmark_module("bench_host_loading")

    row = bench.compare_host_loading("image_simclr", batches=2, rounds=1)

    assert row.benchmark == "host loading image_simclr" and row.unit == "ms/batch"
    assert row.ours > 0 and row.baseline > 0 and math.isfinite(row.ratio)
    assert row.details["batch_size"] > 0 and len(row.details["sslhub_ms_per_round"]) == 1


def test_host_loading_refuses_data_that_is_not_an_image_array(benchmark_module):
    bench = benchmark_module("bench_host_loading")

    with pytest.raises(SystemExit, match="not an in-memory image array"):
        bench.compare_host_loading("text_contrastive", batches=1, rounds=1)
