"""Process-group helpers: joining the group, rank queries, an all-gather that keeps gradients, gradient averaging."""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn


def init_distributed(device: str = "auto") -> None:
    """Join the torchrun process group: NCCL when training on CUDA, gloo on the CPU.

    ``device`` is the recipe's ``train.device``: a CPU run on a machine with GPUs uses gloo.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not dist.is_initialized():
            on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
            backend = "nccl" if on_cuda else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            dist.init_process_group(backend=backend)


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group is running."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """How many processes train together (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def process_rank() -> int:
    """This process's rank in the process group (0 when not distributed); public as ``sslhub.process_rank``.

    A loss over :func:`gather_with_grad` output finds its own rows at ``process_rank() * batch``.
    """
    return dist.get_rank() if is_distributed() else 0


def rank() -> int:
    return process_rank()


def is_main_process() -> bool:
    """Rank 0: the process that writes files and logs."""
    return process_rank() == 0


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


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Replace each parameter's gradient by its mean over all ranks (a no-op in one process).

    For parameters an objective updates itself inside ``forward`` (see
    :meth:`sslhub.Objective.self_updated_parameters`), which DistributedDataParallel leaves alone:
    averaging before the objective's own optimizer step keeps every rank's copy identical.
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()
