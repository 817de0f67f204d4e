"""torch's process-wide modes as compose_gen computes, whatever a caller has switched on around it."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["own_modes"]


@contextlib.contextmanager
def own_modes(device_type: str, grad: bool = True) -> Iterator[None]:
    """float32 as torch's default dtype, no autocast (on the CPU and on ``device_type``), and with ``grad`` gradients on.

    A caller's ``torch.set_default_dtype(torch.float64)`` built float64 layers that refused the float32 data; its
    ``torch.autocast`` ran an fp32 run's steps and evaluations in bf16 (the run's own precision is set per forward
    pass, inside); its ``torch.no_grad()`` made a loss look as if it reached no parameter.
    Inside ``torch.inference_mode()``, which no context can leave for gradients, that is an error saying so.
    """
    if grad and torch.is_inference_mode_enabled():
        raise RuntimeError("called inside torch.inference_mode(), where nothing can learn: build and train a run outside it")
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        with contextlib.ExitStack() as modes:
            for device in dict.fromkeys(("cpu", device_type)):
                modes.enter_context(torch.autocast(device, enabled=False))
            if grad:
                modes.enter_context(torch.enable_grad())
            yield
    finally:
        torch.set_default_dtype(default)
