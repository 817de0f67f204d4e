r"""Likelihoods for quantised data: values on an evenly spaced grid of ``bins`` levels in ``[low, high]``.

* :class:`QuantizedCategorical` — one free probability per level (van den Oord
  et al. 2016, "Pixel Recurrent Neural Networks": a 256-way softmax per pixel).
* :class:`DiscretizedLogisticMixture` — the PixelCNN++ likelihood (Salimans et
  al. 2017, "PixelCNN++", eq. 2): with the grid mapped to :math:`[-1, 1]` and bin
  half-width :math:`h = 1/(\text{bins}-1)`,

  .. math:: P(x) = \sum_k \pi_k \left[\sigma\!\left(\tfrac{x + h - \mu_k}{s_k}\right)
            - \sigma\!\left(\tfrac{x - h - \mu_k}{s_k}\right)\right],

  where the lowest bin takes all the mass below it (:math:`\sigma(\cdot)` of the
  lower edge is replaced by 0) and the highest all the mass above it, so the
  probabilities of the ``bins`` levels sum to one exactly.  Channels are modelled
  independently (the paper's linear dependence between RGB sub-pixels is not
  implemented).

Both are elementwise (event shape ``()``); decoders wrap them in ``Independent``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Categorical, Distribution, constraints

__all__ = ["DiscretizedLogisticMixture", "Grid", "QuantizedCategorical"]

#: PixelCNN++ clamps log-scales from below for stability.
MIN_LOG_SCALE = -7.0


class Grid:
    """``bins`` evenly spaced values ``low + i·(high − low)/(bins − 1)``, ``i = 0..bins−1``."""

    def __init__(self, bins: int, low: float = 0.0, high: float = 1.0) -> None:
        if bins < 2 or not high > low:
            raise ValueError(f"a grid needs bins ≥ 2 and high > low, got bins={bins}, low={low}, high={high}")
        self.bins, self.low, self.high = bins, low, high

    def index(self, x: Tensor) -> Tensor:
        """The nearest level's index (values off the grid are rounded to it)."""
        position = (x - self.low) / (self.high - self.low) * (self.bins - 1)
        return position.round().clamp(0, self.bins - 1).long()

    def value(self, index: Tensor, like: Tensor) -> Tensor:
        return (self.low + index.to(like.dtype) * (self.high - self.low) / (self.bins - 1)).to(like.device)

    def to_unit(self, x: Tensor) -> Tensor:
        """``[low, high] → [−1, 1]``."""
        return 2 * (x - self.low) / (self.high - self.low) - 1

    def from_unit(self, y: Tensor) -> Tensor:
        return self.low + (y + 1) * (self.high - self.low) / 2

    def values(self, like: Tensor) -> Tensor:
        return self.value(torch.arange(self.bins, device=like.device), like)


class QuantizedCategorical(Distribution):
    """A categorical distribution over the levels of a :class:`Grid`, in value space."""

    arg_constraints: dict = {}
    support = constraints.real

    def __init__(self, logits: Tensor, grid: Grid) -> None:
        if logits.shape[-1] != grid.bins:
            raise ValueError(f"expected {grid.bins} logits per value, got {logits.shape[-1]}")
        self.logits, self.grid = logits, grid
        super().__init__(logits.shape[:-1], validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        shape = torch.broadcast_shapes(value.shape, self.batch_shape)
        index = self.grid.index(value).expand(shape).unsqueeze(-1)
        return self.logits.log_softmax(-1).expand(*shape, -1).gather(-1, index).squeeze(-1)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> Tensor:
        with torch.no_grad():
            index = Categorical(logits=self.logits, validate_args=False).sample(torch.Size(sample_shape))
            return self.grid.value(index, self.logits)

    @property
    def mean(self) -> Tensor:
        return self.logits.softmax(-1) @ self.grid.values(self.logits)


class DiscretizedLogisticMixture(Distribution):
    """A mixture of ``K`` logistics discretised to a :class:`Grid` (Salimans et al. 2017).

    ``logits``, ``loc`` and ``log_scale`` have shape ``batch + (K,)``; ``loc`` is in
    the grid's ``[−1, 1]`` units.
    """

    arg_constraints: dict = {}
    support = constraints.real

    def __init__(self, logits: Tensor, loc: Tensor, log_scale: Tensor, grid: Grid) -> None:
        self.logits, self.loc, self.grid = logits, loc, grid
        self.log_scale = log_scale.clamp_min(MIN_LOG_SCALE)
        super().__init__(logits.shape[:-1], validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        y = self.grid.to_unit(value).unsqueeze(-1)
        half = 1.0 / (self.grid.bins - 1)
        inverse_scale = torch.exp(-self.log_scale)
        upper = inverse_scale * (y - self.loc + half)
        lower = inverse_scale * (y - self.loc - half)
        # log(σ(upper) − σ(lower)) without cancellation: σ(a) − σ(b) = e^a (1 − e^{b−a}) / ((1 + e^a)(1 + e^b)).
        middle = upper - F.softplus(upper) - F.softplus(lower) + torch.log(-torch.expm1(lower - upper))
        first_bin = upper - F.softplus(upper)  # log σ(upper)
        last_bin = -F.softplus(lower)  # log(1 − σ(lower))
        per_component = torch.where(y < -1 + half, first_bin, torch.where(y > 1 - half, last_bin, middle))
        return torch.logsumexp(self.logits.log_softmax(-1) + per_component, dim=-1)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> Tensor:
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.batch_shape
            component = Categorical(logits=self.logits, validate_args=False).sample(torch.Size(sample_shape))
            pick = component.unsqueeze(-1)
            loc = self.loc.expand(*shape, -1).gather(-1, pick).squeeze(-1)
            scale = self.log_scale.expand(*shape, -1).gather(-1, pick).squeeze(-1).exp()
            eps = torch.finfo(loc.dtype).eps
            u = torch.rand_like(loc).clamp(eps, 1 - eps)
            y = (loc + scale * (torch.log(u) - torch.log1p(-u))).clamp(-1, 1)
            return self.grid.value(self.grid.index(self.grid.from_unit(y)), loc)

    @property
    def mean(self) -> Tensor:
        """The mixture of the component locations clipped to the range (a picture, not the exact mean)."""
        weights = self.logits.softmax(-1)
        return self.grid.from_unit((weights * self.loc.clamp(-1, 1)).sum(-1))
