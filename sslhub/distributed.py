"""Process-group helpers: rank queries and an all-gather that keeps gradients."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return rank() == 0


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        gathered = [torch.zeros_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, tensor.contiguous())
        return tuple(gathered)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> Tensor:  # type: ignore[override]
        stacked = torch.stack(grads)
        dist.all_reduce(stacked)
        return stacked[dist.get_rank()]


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` ([B, ...]) from every rank along dim 0, keeping this rank's gradient path.

    Without a process group it returns ``tensor`` unchanged, so objectives call it
    unconditionally (contrastive negatives from all ranks).
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return tensor
    return torch.cat(_GatherWithGrad.apply(tensor), dim=0)
