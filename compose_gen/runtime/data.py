"""Seeded, resumable batches from in-memory data.

Each epoch is a permutation drawn from ``seed`` and the epoch number alone, so a
stream restored from ``(epoch, position)`` yields exactly the batches an
uninterrupted run would have.
"""

from __future__ import annotations

import torch
from torch import Tensor

from compose_gen.core import TensorData

__all__ = ["BatchStream"]


class BatchStream:
    """Endless shuffled batches of ``batch_size`` (the last short batch of an epoch is dropped)."""

    def __init__(self, data: TensorData, batch_size: int, seed: int, device: torch.device) -> None:
        if len(data) == 0:
            raise ValueError("the training split is empty")
        self.fields = {k: v.to(device) for k, v in data.fields.items()}
        self.size = len(data)
        self.batch_size = min(batch_size, self.size)
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._order = self._permutation()

    def _permutation(self) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.size, generator=generator).to(next(iter(self.fields.values())).device)

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> dict[str, Tensor]:
        if self.position + self.batch_size > self.size:
            self.epoch += 1
            self.position = 0
            self._order = self._permutation()
        index = self._order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return {k: v[index] for k, v in self.fields.items()}

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation()
