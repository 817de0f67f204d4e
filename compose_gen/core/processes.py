"""Batch statistics of the global batch under data parallelism, for layers that learn from them.

Under ``torchrun`` each process sees its slice of every global batch, and
gradients are averaged, so the model trains as one process would.  A layer whose
state comes from statistics of a batch instead of from gradients (actnorm's
data-dependent initialisation, a VQ-VAE's moving-average codebook) must combine
them over the processes itself, as ``torch.nn.SyncBatchNorm`` does: each process
computes the sums over its slice, :func:`sum_over_processes` makes them the sums
over the global batch, and every process then sets the same state.  Every
process must call these at the same point of the same step (they are collective);
without a process group they do nothing, so a layer calls them unconditionally.

    >>> counts = torch.tensor([3.0, 1.0])
    >>> sum_over_processes(counts)   # one process: unchanged
    >>> counts
    tensor([3., 1.])
"""

from __future__ import annotations

from typing import Callable

import torch.distributed as dist
from torch import Tensor

__all__ = ["copy_from_first_process", "sum_over_processes"]


def _group_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sum_over_processes(*tensors: Tensor) -> None:
    """Replace each tensor, in place, by its element-wise sum over the processes."""
    if _group_active():
        for tensor in tensors:
            _in_place(tensor, dist.all_reduce)


def copy_from_first_process(*tensors: Tensor) -> None:
    """Replace each tensor, in place, by process 0's (a choice one process makes for all, e.g. random rows)."""
    if _group_active():
        for tensor in tensors:
            _in_place(tensor, lambda t: dist.broadcast(t, 0))


def _in_place(tensor: Tensor, collective: Callable[[Tensor], object]) -> None:
    """``collective`` on ``tensor``, through a contiguous copy for a view such as ``stats[:, 0]`` (gloo would write past it)."""
    if tensor.is_contiguous():
        collective(tensor)
        return
    dense = tensor.contiguous()
    collective(dense)
    tensor.copy_(dense)
