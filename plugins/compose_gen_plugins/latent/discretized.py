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
  probabilities of the ``bins`` levels sum to one exactly.  Each value has its
  own mixture: elementwise (event shape ``()``), so decoders wrap it in
  ``Independent``.
* :class:`CoupledDiscretizedLogisticMixture` — the same likelihood for RGB
  pixels with PixelCNN++'s dependence between sub-pixels (Salimans et al. 2017,
  §2.2): one mixture per pixel whose component ``k`` is shared by the three
  channels, the green mean shifted linearly by the red value and the blue mean
  by red and green.  Its event is the whole image ``(3, *spatial)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Categorical, Distribution, constraints

__all__ = ["CoupledDiscretizedLogisticMixture", "DiscretizedLogisticMixture", "Grid", "QuantizedCategorical"]

#: PixelCNN++ clamps log-scales from below for stability.
MIN_LOG_SCALE = -7.0


class Grid:
    """``bins`` evenly spaced values ``low + i·(high − low)/(bins − 1)``, ``i = 0..bins−1``."""

    def __init__(self, bins: int, low: float = 0.0, high: float = 1.0) -> None:
        if bins < 2 or not high > low:
            raise ValueError(f"a grid needs bins ≥ 2 and high > low, got bins={bins}, low={low}, high={high}")
        self.bins, self.low, self.high = bins, low, high

    def check(self, x: Tensor, what: str) -> None:
        """Raise unless every value of ``x`` is one of the levels: off the grid, a mass would round it silently."""
        position = (x.double() - self.low) / (self.high - self.low) * (self.bins - 1)
        off = (position - position.round()).abs().max().item() if x.numel() else 0.0
        outside = x.numel() > 0 and not (self.low - 1e-6 <= x.min().item() and x.max().item() <= self.high + 1e-6)
        if outside:
            raise ValueError(
                f"{what} reach {x.min().item():g}..{x.max().item():g}, beyond this decoder's levels from {self.low:g} to "
                f"{self.high:g}: set low and high to the data's range (8x8 digits scaled to [0, 1]: low: 0, high: 1; "
                "unscaled: high: 16)"
            )
        if off > 1e-4:
            raise ValueError(
                f"{what} are not on this decoder's grid of {self.bins} levels from {self.low:g} to {self.high:g} "
                f"(up to {off:.3g} steps off it): set bins to the data's number of levels (8x8 digits: bins: 17)"
            )

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


def _logistic_bin_log_prob(y: Tensor, loc: Tensor, log_scale: Tensor, grid: Grid) -> Tensor:
    r"""log P(level y) of a logistic discretised to ``grid``, all in the grid's ``[−1, 1]`` units (broadcasting).

    :math:`\log[\sigma((y + h - \mu)/s) - \sigma((y - h - \mu)/s)]`, the lowest level
    taking the mass below it and the highest the mass above it (Salimans et al. 2017, eq. 2).
    """
    half = 1.0 / (grid.bins - 1)
    inverse_scale = torch.exp(-log_scale)
    upper = inverse_scale * (y - loc + half)
    lower = inverse_scale * (y - loc - half)
    # log(σ(upper) − σ(lower)) without cancellation: σ(a) − σ(b) = e^a (1 − e^{b−a}) / ((1 + e^a)(1 + e^b)).
    middle = upper - F.softplus(upper) - F.softplus(lower) + torch.log(-torch.expm1(lower - upper))
    first_bin = upper - F.softplus(upper)  # log σ(upper)
    last_bin = -F.softplus(lower)  # log(1 − σ(lower))
    return torch.where(y < -1 + half, first_bin, torch.where(y > 1 - half, last_bin, middle))


def _logistic_bin_mean(loc: Tensor, log_scale: Tensor, grid: Grid) -> Tensor:
    r"""E[level] of a logistic discretised to ``grid``, in the grid's ``[−1, 1]`` units (broadcasting).

    :math:`-1 + 2h \sum_{i=1}^{	ext{bins}-1} P(	ext{level} \ge i) = -1 + 2h \sum_i \sigma((\mu - b_i)/s)`, the
    :math:`b_i = -1 + (2i - 1)h` being the boundaries between levels: the edge levels' mass beyond the range counted
    at the edges, as :func:`_logistic_bin_log_prob` counts it (a wide component centred below the range puts most of
    its mean there).  One boundary at a time, so memory stays that of ``loc``.
    """
    half = 1.0 / (grid.bins - 1)
    inverse_scale = torch.exp(-log_scale)
    at_or_above = torch.zeros_like(loc)
    for i in range(1, grid.bins):
        at_or_above = at_or_above + torch.sigmoid(inverse_scale * (loc - (-1 + (2 * i - 1) * half)))
    return -1 + 2 * half * at_or_above


def _sample_index(loc: Tensor, log_scale: Tensor, grid: Grid) -> Tensor:
    """Level indices drawn from discretised logistics: a logistic sample (``[−1, 1]`` units) clipped and rounded."""
    eps = torch.finfo(loc.dtype).eps
    u = torch.rand_like(loc).clamp(eps, 1 - eps)
    y = (loc + log_scale.exp() * (torch.log(u) - torch.log1p(-u))).clamp(-1, 1)
    return grid.index(grid.from_unit(y))


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
        per_component = _logistic_bin_log_prob(y, self.loc, self.log_scale, self.grid)
        return torch.logsumexp(self.logits.log_softmax(-1) + per_component, dim=-1)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> Tensor:
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.batch_shape
            component = Categorical(logits=self.logits, validate_args=False).sample(torch.Size(sample_shape))
            pick = component.unsqueeze(-1)
            loc = self.loc.expand(*shape, -1).gather(-1, pick).squeeze(-1)
            log_scale = self.log_scale.expand(*shape, -1).gather(-1, pick).squeeze(-1)
            return self.grid.value(_sample_index(loc, log_scale, self.grid), loc)

    @property
    def mean(self) -> Tensor:
        """E[x] = Σ_k π_k E[level | k], exactly (:func:`_logistic_bin_mean`)."""
        weights = self.logits.softmax(-1)
        return self.grid.from_unit((weights * _logistic_bin_mean(self.loc, self.log_scale, self.grid)).sum(-1))


class CoupledDiscretizedLogisticMixture(Distribution):
    r"""RGB pixels with PixelCNN++'s linear dependence between sub-pixels (Salimans et al. 2017, §2.2).

    Per pixel, one mixture over ``K`` components shared by the channels; given
    component ``k`` the channels are discretized logistics (per-channel scales
    :math:`s_{c,k}`) whose means depend on the channels before them, all in the
    grid's ``[−1, 1]`` units:

    .. math:: \tilde\mu_{R,k} = \mu_{R,k}, \quad
              \tilde\mu_{G,k} = \mu_{G,k} + \alpha_k x_R, \quad
              \tilde\mu_{B,k} = \mu_{B,k} + \beta_k x_R + \gamma_k x_G,

    .. math:: \log P(x) = \operatorname{logsumexp}_k \Big[\log \pi_k
              + \sum_{c \in \{R,G,B\}} \log P_c(x_c \mid \tilde\mu_{c,k}, s_{c,k})\Big],

    with :math:`P_c` the binned logistic of :class:`DiscretizedLogisticMixture`.
    Sampling draws ``k``, then R, then G given the drawn R, then B given both.
    The paper sets :math:`(\alpha, \beta, \gamma) = \tanh(\cdot)` of network
    outputs; here they are taken as given.

    ``logits`` has shape ``batch + spatial + (K,)``; ``loc``, ``log_scale`` and
    ``coefficients`` (the rows :math:`\alpha, \beta, \gamma`) ``batch + spatial + (3, K)``.
    The event is the image ``(3, *spatial)``, channel first, with the last
    ``spatial_dims`` dimensions before ``(K,)`` spatial (0: one pixel, event ``(3,)``);
    ``log_prob`` sums the pixels.
    """

    arg_constraints: dict = {}
    support = constraints.real

    def __init__(
        self, logits: Tensor, loc: Tensor, log_scale: Tensor, coefficients: Tensor, grid: Grid, spatial_dims: int = 0
    ) -> None:
        if loc.shape[-2] != 3 or loc.shape[-1] != logits.shape[-1]:
            raise ValueError(f"expected loc of shape batch + (3, {logits.shape[-1]}), got {tuple(loc.shape)}")
        self.logits, self.loc, self.coefficients, self.grid = logits, loc, coefficients, grid
        self.log_scale = log_scale.clamp_min(MIN_LOG_SCALE)
        self.spatial_dims = spatial_dims
        pixels = logits.shape[:-1]
        batch, spatial = pixels[: len(pixels) - spatial_dims], pixels[len(pixels) - spatial_dims :]
        super().__init__(batch, torch.Size((3, *spatial)), validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        y = self.grid.to_unit(value).movedim(-1 - self.spatial_dims, -1).unsqueeze(-1)  # ... + spatial + (3, 1)
        means, _ = _shifted_means(self.loc, self.coefficients, lambda channel, _: y[..., channel, :])
        per_channel = _logistic_bin_log_prob(y, means, self.log_scale, self.grid)
        per_pixel = torch.logsumexp(self.logits.log_softmax(-1) + per_channel.sum(-2), dim=-1)
        return per_pixel.reshape(*per_pixel.shape[: per_pixel.dim() - self.spatial_dims], -1).sum(-1)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> Tensor:
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.logits.shape[:-1]
            component = Categorical(logits=self.logits, validate_args=False).sample(torch.Size(sample_shape))
            pick = component[..., None, None].expand(*shape, 3, 1)
            loc, log_scale, coefficients = (
                t.expand(*shape, 3, -1).gather(-1, pick) for t in (self.loc, self.log_scale, self.coefficients)
            )

            indices: list[Tensor] = []

            def draw(channel: int, mean: Tensor) -> Tensor:  # the level exactly as log_prob will see it
                indices.append(_sample_index(mean, log_scale[..., channel, :], self.grid))
                return self.grid.to_unit(self.grid.value(indices[-1], mean))

            _shifted_means(loc, coefficients, draw)
            return self.grid.value(torch.cat(indices, -1), loc).movedim(-1, -1 - self.spatial_dims)

    @property
    def mean(self) -> Tensor:
        """Per component, each channel's expected level (:func:`_logistic_bin_mean`) at its mean shifted by the earlier
        channels' expected levels, mixed: exact for red, and for green and blue up to the curvature of the levels' mean
        in the shift (exact with the coefficients 0)."""

        def expected(channel: int, mean: Tensor) -> Tensor:
            return _logistic_bin_mean(mean, self.log_scale[..., channel, :], self.grid)

        _, levels = _shifted_means(self.loc, self.coefficients, expected)
        mixed = (self.logits.softmax(-1).unsqueeze(-2) * levels).sum(-1)
        return self.grid.from_unit(mixed).movedim(-1, -1 - self.spatial_dims)


def _shifted_means(loc: Tensor, coefficients: Tensor, level: Callable[[int, Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    r"""R, G, B in turn: the mean :math:`\tilde\mu_c`, shifted by the earlier channels' levels, then ``level(c, μ̃_c)``.

    ``loc`` and ``coefficients`` hold the channels on dimension −2; returns the
    means and the levels, stacked on dimension −2.
    """
    alpha, beta, gamma = coefficients.unbind(-2)
    mu_red, mu_green, mu_blue = loc.unbind(-2)
    red = level(0, mu_red)
    mu_green = mu_green + alpha * red
    green = level(1, mu_green)
    mu_blue = mu_blue + beta * red + gamma * green
    blue = level(2, mu_blue)
    return (
        torch.stack(torch.broadcast_tensors(mu_red, mu_green, mu_blue), dim=-2),
        torch.stack(torch.broadcast_tensors(red, green, blue), dim=-2),
    )
