"""Small numerical helpers over ``torch.distributions`` conventions.

Distributions returned by priors, encoders and decoders are ordinary
``torch.distributions.Distribution`` objects whose ``log_prob`` already sums the
event dimensions (wrap elementwise ones in ``Independent``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution

__all__ = ["broadcast_value", "log_mean_exp", "sum_rightmost"]


def sum_rightmost(value: Tensor, dims: int) -> Tensor:
    """Sum the ``dims`` trailing dimensions of ``value`` (no-op for ``dims == 0``)."""
    return value.sum(tuple(range(-dims, 0))) if dims > 0 else value


def log_mean_exp(value: Tensor, dim: int = 0) -> Tensor:
    """Stable ``log(mean(exp(value), dim))`` = logsumexp - log(n)."""
    return torch.logsumexp(value, dim=dim) - math.log(value.shape[dim])


def broadcast_value(value: Tensor, distribution: Distribution) -> Tensor:
    """``value`` expanded to the batch shape it broadcasts to with ``distribution``'s, as ``log_prob`` does in ``torch.distributions``.

    A distribution over ``k`` draws per example (batch ``(k, n)``) then scores
    data of batch ``(n,)``; one whose ``log_prob`` pairs the value with per-example
    tensors (a flow's context) needs the value at the full shape.
    """
    batch = value.shape[: value.dim() - len(distribution.event_shape)]
    if batch == distribution.batch_shape:
        return value
    return value.expand(*torch.broadcast_shapes(batch, distribution.batch_shape), *distribution.event_shape)
