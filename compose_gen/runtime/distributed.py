"""Data-parallel training under ``torchrun``: one process per device, gradients averaged.

``torchrun --nproc_per_node=N -m compose_gen train SPEC`` starts N processes with
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set;
:func:`setup` joins them into a process group (NCCL on CUDA, gloo on CPU).

Why no ``DistributedDataParallel`` wrapper: a compiled model has several players
over shared components, and each player's step computes only the ancestors of
its terms, so a DDP module per player would register the same parameters several
times and would have to find unused parameters on every step.  Instead each rank
runs the same player step on its slice of the global batch, and after
``backward`` the trainer averages that player's gradients over the ranks with one
coalesced all-reduce per dtype (:meth:`Distributed.average_gradients`).  That is
exactly data parallelism: with the same global batch, the averaged gradient of
mean-reduced losses equals the one-process gradient up to float rounding.  The
all-reduce also carries a "non-finite loss" flag, so every rank takes the same
NaN-guard decision.  Buffers (running statistics, step counters) are broadcast
from rank 0 after every round, parameters once after the first round, so the
ranks never drift apart; layers that learn from batch statistics (actnorm, an EMA
codebook) combine them over the ranks themselves (:mod:`compose_gen.core.processes`).

Rank 0 alone writes logs, samples, checkpoints and evaluations; every rank reads
the same checkpoint on resume (the run folder must be on a shared filesystem for
several nodes).
"""

from __future__ import annotations

import atexit
import math
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["Distributed", "setup"]


@dataclass
class Distributed:
    """This process's place in the group; a group of one does nothing."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _comm(self, tensor: Tensor) -> Tensor:
        """``tensor`` on a device the backend can talk through (NCCL needs CUDA)."""
        return tensor.to(self.device) if self.device.type == "cuda" else tensor.cpu()

    def average_gradients(self, params: Iterable[nn.Parameter], loss: Tensor) -> Tensor:
        """Average the gradients of ``params`` over ranks; return a number that is finite iff every rank's ``loss`` is.

        One all-reduce per parameter dtype.  A graph may depend on the data, so a
        parameter may have a gradient on some ranks only: a rank without one adds
        zeros, which is its gradient, and says so in a header that rides along with
        the first bucket; a parameter no rank has a gradient for keeps none (as
        under ``DistributedDataParallel`` with ``find_unused_parameters``).  The
        header also counts the ranks whose loss is not finite, so the result is 0
        or ``inf``.  Without other ranks it is ``loss`` itself.  The device is read
        back only by a rank that lacks a gradient.
        """
        if not self.active:
            return loss
        params = list(params)
        had = torch.ones(len(params), device=loss.device)
        missing = [i for i, p in enumerate(params) if p.grad is None]
        if missing:
            had[missing] = 0.0
        header = torch.cat([(~torch.isfinite(loss)).float().reshape(1), had])  # [ranks with a non-finite loss, per parameter: ranks with a gradient]
        by_dtype: dict[torch.dtype, list[int]] = {}
        for i, p in enumerate(params):
            by_dtype.setdefault(p.dtype, []).append(i)
        if not by_dtype:
            header = self._comm(header)
            dist.all_reduce(header)
        counts: list[float] | None = None
        for first, (dtype, indices) in enumerate(by_dtype.items()):
            grads = [torch.zeros_like(params[i]) if params[i].grad is None else params[i].grad for i in indices]
            flat = self._comm(torch.cat([g.reshape(-1) for g in grads] + ([header.to(dtype)] if first == 0 else [])))
            dist.all_reduce(flat)
            if first == 0:
                header, flat = flat[-len(header) :].float(), flat[: -len(header)]
            flat /= self.world_size
            offset = 0
            for i in indices:
                p = params[i]
                averaged = flat[offset : offset + p.numel()].view_as(p)
                offset += p.numel()
                if p.grad is not None:
                    p.grad.copy_(averaged)
                    continue
                counts = header.tolist() if counts is None else counts
                if counts[1 + i] > 0:
                    p.grad = averaged.to(p.device, copy=True)
        return torch.where(header[0] == 0, 0.0, math.inf)

    def sum(self, values: Tensor) -> Tensor:
        """Element-wise sum of ``values`` over ranks, in their dtype (for logged averages)."""
        if not self.active:
            return values
        total = self._comm(values.detach().clone())
        dist.all_reduce(total)
        return total.to(values.device)

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on some rank (stop requests)."""
        if not self.active:
            return flag
        value = self._comm(torch.tensor([float(flag)]))
        dist.all_reduce(value)
        return bool(value.item() > 0)

    def broadcast(self, tensors: Iterable[Tensor]) -> None:
        """Copy rank 0's ``tensors`` (each once, however often listed) to every rank: one broadcast per dtype."""
        if not self.active:
            return
        by_dtype: dict[torch.dtype, dict[int, Tensor]] = {}
        for tensor in tensors:
            by_dtype.setdefault(tensor.dtype, {})[id(tensor)] = tensor
        for group in by_dtype.values():
            flat = torch.cat([self._comm(t.detach().reshape(-1)) for t in group.values()])
            dist.broadcast(flat, 0)
            offset = 0
            for t in group.values():
                t.data.copy_(flat[offset : offset + t.numel()].view(t.shape))
                offset += t.numel()

    def refuse_disagreement(self, key: str) -> None:
        """Raise on every process unless every process holds rank 0's ``key``: data-parallel processes must train one
        model on one dataset, or their weights part silently (another learning rate) or their collectives never meet
        (another number of steps) and they wait forever."""
        if not self.active:
            return
        differs = self.broadcast_text(key) != key
        if self.any(differs):
            who = "this process was" if differs else "another process was"
            raise ValueError(
                f"{who} given another spec or other data than process 0 (the model, the train settings, the seed or the "
                "data's examples differ): give every process of the torchrun the same spec, --set overrides and data files"
            )

    def broadcast_text(self, text: str) -> str:
        """Rank 0's ``text`` on every rank (e.g. the run folder it chose)."""
        if not self.active:
            return text
        raw = text.encode() if self.is_main else b""
        size = self._comm(torch.tensor([len(raw)]))
        dist.broadcast(size, 0)
        buffer = torch.zeros(int(size.item()), dtype=torch.uint8)
        if self.is_main:
            buffer = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        buffer = self._comm(buffer)
        dist.broadcast(buffer, 0)
        return bytes(buffer.cpu().tolist()).decode()

    def gather_bytes(self, tensor: Tensor) -> list[Tensor]:
        """Every rank's uint8 ``tensor`` (all the same size), on every rank, in rank order."""
        if not self.active:
            return [tensor]
        local = self._comm(tensor)
        out = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(out, local)
        return [t.cpu() for t in out]

    def wait_for_main(self) -> None:
        """Under gloo, wait until process 0 gets here too (after sampling and evaluating alone, which can take long).

        Gloo's worker threads outlive ``destroy_process_group`` (torch keeps the group
        referenced once an optimizer exists), and one that frees a finished collective's
        tensors while Python finalises takes the GIL from a dead interpreter and aborts
        the process; torchrun then kills process 0, mid-evaluation.  A process that
        exits right after training, its last collective just done, did so about one run
        in ten on a busy machine; one that waits here has long-idle threads when it
        exits.  NCCL's threads hold no Python tensors, and its watchdog would abort a
        long wait, so under NCCL this does nothing.  The wait runs in a group of its
        own, whose timeout (:data:`END_WAIT`) outlasts any evaluation: the default
        group's 30 minutes bound every message of a barrier in it.
        """
        if self.active and _end_group is not None:
            try:
                dist.monitored_barrier(group=_end_group, timeout=END_WAIT)
            except RuntimeError:  # gloo's "Connection closed by peer": process 0 failed after training, and says why
                if self.is_main:
                    raise
                raise RuntimeError("process 0 ended before the end of the run (its error says why)") from None


#: How long the other processes wait for process 0 at the end of training (:meth:`Distributed.wait_for_main`).
END_WAIT = timedelta(days=1)
#: The gloo group of that wait (None without one).
_end_group: dist.ProcessGroup | None = None


def _from_environment(name: str, default: int) -> int:
    """The whole number torchrun sets in the environment variable ``name``, ``default`` without it; a ValueError that
    names the variable for another value (``RANK=abc`` was "invalid literal for int()", or a traceback)."""
    value = os.environ.get(name)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise ValueError(f"the environment variable {name}={value!r} is no whole number: torchrun sets it to one (unset it outside it)") from None


def launched_world_size() -> int:
    """How many processes torchrun started (``WORLD_SIZE``), 1 without it."""
    return _from_environment("WORLD_SIZE", 1)


def launched_rank() -> int:
    """This process's rank under torchrun (``RANK``), 0 without it: known before the process group is joined, so that
    what every process would say alike (a spec error) is said by process 0 alone."""
    return _from_environment("RANK", 0) if launched_world_size() > 1 else 0


def setup(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the ``torchrun`` process group if there is one; return it and this process's device.

    Under torchrun a CUDA device becomes ``cuda:LOCAL_RANK``.  Without torchrun (or
    with one process) nothing is initialised.
    """
    world_size = launched_world_size()
    if world_size <= 1:
        return Distributed(device=device), device
    rank = launched_rank()
    if device.type == "cuda":
        device = torch.device("cuda", _from_environment("LOCAL_RANK", 0))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        global _end_group
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world_size)
        if backend == "gloo":
            _end_group = dist.new_group(backend="gloo", timeout=END_WAIT)
        atexit.register(_shutdown)
    return Distributed(rank, world_size, device), device


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
