"""Optimizers and learning-rate schedules named in a spec.

Schedules are pure functions of the round and the spec's ``train.steps`` (no
state to checkpoint): the trainer sets ``lr = base_lr · factor(step, train.steps)``
before every optimizer step, so a resumed run follows the same schedule as an
uninterrupted one, whatever ``--steps`` each invocation trains to.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from compose_gen.spec.model import SGD, Adam, AdamW, RMSprop, ScheduleSpec

__all__ = ["lr_factor", "make_optimizer"]


def make_optimizer(spec: Adam | AdamW | RMSprop | SGD, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The spec's optimizer over ``params``.

    Adam and AdamW run torch's fused kernel (``fused=True``: one kernel for all
    tensors instead of several per tensor; 2.6x faster than the default on a
    small VAE on CPU) when every parameter is a float tensor on CPU or CUDA.
    """
    params = list(params)
    options = spec.model_dump(exclude={"type"})
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}[spec.type]
    if spec.type in ("adam", "adamw") and params and all(_fusable(p) for p in params):
        options["fused"] = True
    return cls(params, **options)


def _fusable(p: nn.Parameter) -> bool:
    return p.is_floating_point() and p.device.type in ("cpu", "cuda")


def lr_factor(schedule: ScheduleSpec, step: int, total: int) -> float:
    """Multiplier of the base learning rate at ``step`` of ``total`` (linear warm-up first)."""
    if schedule.warmup and step < schedule.warmup:
        return (step + 1) / schedule.warmup
    progress = min(1.0, (step - schedule.warmup) / max(1, total - schedule.warmup))
    if schedule.type == "cosine":
        return schedule.min_factor + (1 - schedule.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule.type == "linear":
        return 1 - (1 - schedule.min_factor) * progress
    if schedule.type == "step":
        return schedule.gamma ** ((step - schedule.warmup) // schedule.every)
    if schedule.type == "exponential":
        return schedule.gamma ** (step - schedule.warmup)
    return 1.0
