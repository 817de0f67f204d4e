"""Small numerical helpers over ``torch.distributions`` conventions.

Distributions returned by priors, encoders and decoders are ordinary
``torch.distributions.Distribution`` objects whose ``log_prob`` already sums the
event dimensions (wrap elementwise ones in ``Independent``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["log_mean_exp", "sum_rightmost"]


def sum_rightmost(value: Tensor, dims: int) -> Tensor:
    """Sum the ``dims`` trailing dimensions of ``value`` (no-op for ``dims == 0``)."""
    return value.sum(tuple(range(-dims, 0))) if dims > 0 else value


def log_mean_exp(value: Tensor, dim: int = 0) -> Tensor:
    """Stable ``log(mean(exp(value), dim))`` = logsumexp - log(n)."""
    return torch.logsumexp(value, dim=dim) - math.log(value.shape[dim])
