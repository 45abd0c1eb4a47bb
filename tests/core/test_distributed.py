"""Process-group helpers, in two real gloo processes."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sslhub.distributed import average_gradients


def _average_in_rank(rank: int, init_file: str, results: dict) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        layer = torch.nn.Linear(3, 2)
        with torch.no_grad():
            layer.weight.fill_(1.0)
            layer.bias.fill_(0.0)
        # each rank sees different data, so its local gradients differ
        layer(torch.full((4, 3), float(rank + 1))).sum().backward()
        frozen = torch.nn.Parameter(torch.zeros(2))  # no gradient: left alone
        average_gradients([*layer.parameters(), frozen])
        results[rank] = (layer.weight.grad.clone(), layer.bias.grad.clone(), frozen.grad)
    finally:
        dist.destroy_process_group()


def test_average_gradients_gives_every_rank_the_mean(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_average_in_rank, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
    for rank in (0, 1):
        weight, bias, frozen = results[rank]
        # rank 0's weight gradient is 4 * 1 per entry, rank 1's is 4 * 2: the mean is 6
        torch.testing.assert_close(weight, torch.full((2, 3), 6.0))
        torch.testing.assert_close(bias, torch.full((2,), 4.0))
        assert frozen is None


def test_average_gradients_is_a_no_op_in_one_process():
    parameter = torch.nn.Parameter(torch.ones(3))
    parameter.grad = torch.full((3,), 2.0)
    average_gradients([parameter])
    torch.testing.assert_close(parameter.grad, torch.full((3,), 2.0))


def test_public_process_group_helpers_outside_a_process_group():
    import sslhub

    assert {"process_rank", "world_size", "is_main_process", "is_distributed"} <= set(sslhub.__all__)
    assert (sslhub.process_rank(), sslhub.world_size(), sslhub.is_main_process(), sslhub.is_distributed()) == (
        0,
        1,
        True,
        False,
    )
