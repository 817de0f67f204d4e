"""Small numerical helpers over ``torch.distributions`` conventions.

Distributions returned by priors, encoders and decoders are ordinary
``torch.distributions.Distribution`` objects whose ``log_prob`` already sums the
event dimensions (wrap elementwise ones in ``Independent``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from torch.distributions import Distribution

__all__ = [
    "MAX_DRAWS",
    "bits_per_dim",
    "broadcast_value",
    "draw_count",
    "importance_sampled_log_likelihood",
    "log_mean_exp",
    "repeat_for_draws",
    "sum_rightmost",
]


#: The most samples, or importance draws per example, that a metric's parameters may ask for: beyond it a typo is likelier
#: than a plan, and memory or time would run out at the end of training instead of a validate error before it.
MAX_DRAWS = 1_000_000


def sum_rightmost(value: Tensor, dims: int) -> Tensor:
    """Sum the ``dims`` trailing dimensions of ``value`` (no-op for ``dims == 0``)."""
    return value.sum(tuple(range(-dims, 0))) if dims > 0 else value


def draw_count(like: Tensor | int) -> int:
    """How many draws a prior's graph method ``sample(like)`` makes: ``like`` itself, a whole count, or one per row of a tensor.

    A spec writes ``prior.sample(x)`` (as many as x has examples) or ``prior.sample(64)``; anything else is a TypeError that
    says so, not ``len()`` failing on it, and a count below 1 a ValueError (0 drew an empty batch that failed far off).
    (A graph's own counts are at most ``MAX_DRAWS``, checked with the spec.)
    """
    if isinstance(like, int) and not isinstance(like, bool):
        if like < 1:
            raise ValueError(f"draws at least one sample; got a count of {like}")
        return like
    if isinstance(like, Tensor) and like.dim() > 0:
        return len(like)
    raise TypeError(f"draws one sample per row of a tensor, or a whole count of samples; got {like!r}")


def bits_per_dim(nll: Tensor | float, dims: int) -> Tensor | float:
    """An NLL in nats of ``dims`` values, in bits per value: ``nll / (D ln 2)`` (in data space when the NLL is)."""
    return nll / (dims * math.log(2))


def log_mean_exp(value: Tensor, dim: int = 0) -> Tensor:
    """Stable ``log(mean(exp(value), dim))`` = logsumexp - log(n)."""
    return torch.logsumexp(value, dim=dim) - math.log(value.shape[dim])


def importance_sampled_log_likelihood(log_weights: Callable[[int], Tensor], samples: int, chunk: int) -> Tensor:
    """:math:`\\log \\frac1K \\sum_{i \\le K} w_i` from ``log_weights(n)`` (``n`` fresh draws, shape ``(n, *batch)``).

    Draws come ``chunk`` at a time; the log-sum-exps of the chunks are combined
    with ``logaddexp``, so only one chunk is ever in memory.
    """
    if samples < 1 or chunk < 1:
        raise ValueError(f"samples and chunk must be positive, got {samples} and {chunk}")
    total: Tensor | None = None
    for start in range(0, samples, chunk):
        part = log_weights(min(chunk, samples - start)).logsumexp(0)
        total = part if total is None else total.logaddexp(part)
    assert total is not None
    return total - math.log(samples)


def repeat_for_draws(value: Tensor, n: int) -> Tensor:
    """``n`` copies of a batch ``value`` ``(N, ...)`` as one batch ``(n·N, ...)``, copy ``i`` in rows ``i·N`` to ``i·N + N − 1``.

    For a layer that draws noise (dequantization) to draw it afresh for each of ``n``
    importance draws; ``.unflatten(0, (n, N))`` splits its output by draw again.
    """
    return value.expand(n, *value.shape).reshape(n * len(value), *value.shape[1:])


def broadcast_value(value: Tensor, distribution: Distribution) -> Tensor:
    """``value`` expanded to the batch shape it broadcasts to with ``distribution``'s, as ``log_prob`` does in ``torch.distributions``.

    A distribution over ``k`` draws per example (batch ``(k, n)``) then scores
    data of batch ``(n,)``; one whose ``log_prob`` pairs the value with per-example
    tensors (a flow's context) needs the value at the full shape.
    """
    batch = value.shape[: value.dim() - len(distribution.event_shape)]
    if batch == distribution.batch_shape:
        return value
    try:
        shape = torch.broadcast_shapes(batch, distribution.batch_shape)
    except RuntimeError:
        raise ValueError(
            f"values of batch shape {tuple(batch)} do not broadcast with the distribution's batch shape {tuple(distribution.batch_shape)} (a "
            "conditional one has a row per row of its context: give as many rows of x as of the context)"
        ) from None
    return value.expand(*shape, *distribution.event_shape)
