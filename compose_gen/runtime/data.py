"""Seeded, resumable batches from in-memory data, split over processes.

Each epoch is a permutation drawn from ``seed`` and the epoch number alone, so a
stream restored from ``(epoch, position)`` yields exactly the batches an
uninterrupted run would have.  Under ``torchrun`` every process draws the same
permutation and takes its contiguous slice of each global batch: rank ``r`` of
``w`` gets examples ``[r·b/w, (r+1)·b/w)`` of the ``b`` in the batch, so the
processes together see exactly the batches one process would.
"""

from __future__ import annotations

import torch
from torch import Tensor

from compose_gen.core import TensorData, derive_seed

__all__ = ["BatchStream"]


class BatchStream:
    """Endless shuffled global batches of ``batch_size`` (the last short batch of an epoch is dropped).

    ``next()`` returns this process's slice of the global batch.
    """

    def __init__(
        self,
        data: TensorData,
        batch_size: int,
        seed: int,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        if len(data) == 0:
            raise ValueError("the training split is empty")
        if batch_size % world_size:
            raise ValueError(f"train.batch_size {batch_size} cannot be split evenly over {world_size} processes")
        self.size = len(data)
        if self.size < world_size:
            raise ValueError(f"the training split has {self.size} examples, fewer than the {world_size} processes")
        self.batch_size = min(batch_size, self.size - self.size % world_size)
        self.local = self.batch_size // world_size
        self.rank = rank
        self.memory_format = memory_format
        self.fields = {k: self._formatted(v.to(device)) for k, v in data.fields.items()}
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._order = self._permutation()

    def _formatted(self, tensor: Tensor) -> Tensor:
        return tensor.contiguous(memory_format=self.memory_format) if tensor.dim() == 4 else tensor

    def _permutation(self) -> Tensor:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, modulus=2**64))
        return torch.randperm(self.size, generator=generator).to(next(iter(self.fields.values())).device)

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> dict[str, Tensor]:
        if self.position + self.batch_size > self.size:
            self.epoch += 1
            self.position = 0
            self._order = self._permutation()
        start = self.position + self.rank * self.local
        index = self._order[start : start + self.local]
        self.position += self.batch_size
        return {k: self._formatted(v[index]) for k, v in self.fields.items()}

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation()
