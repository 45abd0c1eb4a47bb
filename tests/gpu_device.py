"""The device the GPU tests run on, and the marker that skips them where there is none.

The GPU tests (``tests/core/test_engine_cuda.py``, ``tests/contract/test_cuda_step_syncs.py``)
run on ``cuda`` when a CUDA device is present and are skipped otherwise, so CI on a CPU
machine skips them. ``SSLHUB_TEST_GPU_DEVICE=cpu pytest tests/core/test_engine_cuda.py``
runs their logic on the CPU instead (what a CPU cannot show, such as host syncs, is then
skipped inside the test).
"""

from __future__ import annotations

import os

import pytest
import torch

GPU_DEVICE = os.environ.get("SSLHUB_TEST_GPU_DEVICE", "cuda")
ON_CUDA = GPU_DEVICE.startswith("cuda")

needs_gpu = pytest.mark.skipif(
    ON_CUDA and not torch.cuda.is_available(),
    reason="needs a CUDA device (SSLHUB_TEST_GPU_DEVICE=cpu runs the test's logic on the CPU)",
)


def cuda_count() -> int:
    return torch.cuda.device_count() if ON_CUDA and torch.cuda.is_available() else 0
