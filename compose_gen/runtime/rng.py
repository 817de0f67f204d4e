"""Random-number state: saved per process with checkpoints, and fenced off around side work.

Training draws from torch's global generators (CPU and the model's CUDA device).
Anything that is not training (sample grids, evaluation, NaN diagnosis, a failed
compile attempt) runs inside :func:`isolated` or restores a :func:`snapshot`, so
it never shifts the training stream: a run that writes samples every 10 steps
trains bit for bit like one that writes none, and a resumed run like an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

__all__ = ["get_state", "isolated", "kept", "set_state", "snapshot"]


def get_state(device: torch.device) -> dict[str, Tensor]:
    """This process's generator states: ``cpu`` and, on a CUDA device, ``cuda``."""
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_state(states: dict[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(states["cpu"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """Put torch's generators back as the block found them: the CPU's, and every GPU's once CUDA has started."""
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []):
        yield


@contextlib.contextmanager
def isolated(seed: int) -> Iterator[None]:
    """Run a block on its own random stream, seeded by ``seed``; the stream it interrupted goes on after (:func:`kept`,
    which also puts back the GPUs that ``torch.manual_seed`` reseeds beside the model's)."""
    with kept():
        torch.manual_seed(seed)
        yield


def snapshot(model: nn.Module, device: torch.device) -> Callable[[], None]:
    """Capture the RNG and every buffer of ``model``; calling the result puts them back."""
    rng = get_state(device)
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}

    def restore() -> None:
        set_state(rng, device)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])

    return restore
