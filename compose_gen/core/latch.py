"""A set-once flag kept in checkpoints, for data-dependent initialisation."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["Latch"]


class Latch(nn.Module):
    """A boolean that stays true once set: a buffer, so checkpoints keep it, read from the device only until it says so.

    Data-dependent initialisation (Glow's actnorm, a VQ-VAE codebook from the
    first batch) asks every training step whether it has happened.  Reading a
    device tensor each time would be a host sync per step on CUDA and a graph
    break under ``torch.compile``; the latch reads its buffer until it first
    finds it true, then answers from Python.  Loading a state dict (a checkpoint,
    or the dry run putting back the untrained model it started from) is seen on
    the next question, whichever way it sets the flag.

        >>> done = Latch()
        >>> bool(done), done.set(), bool(done)
        (False, None, True)
    """

    def __init__(self, value: bool = False) -> None:
        super().__init__()
        self.register_buffer("value", torch.tensor(value))
        self._known = False

    def __bool__(self) -> bool:
        if not self._known:
            self._known = bool(self.value)
        return self._known

    def set(self) -> None:
        self.value.fill_(True)
        self._known = True

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        # The loaded value answers next, read now: read in a compiled training step, it would break the graph.
        self._known = not self.value.is_meta and bool(self.value)
