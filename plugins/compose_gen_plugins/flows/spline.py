r"""Rational-quadratic spline flows (Durkan et al. 2019, "Neural Spline Flows", arXiv:1906.04032).

Each transformed feature goes through a monotone rational-quadratic spline on
:math:`[-B, B]` with ``bins`` bins: knots :math:`(x_k, y_k)` and derivatives
:math:`\delta_k` at the knots.  In bin :math:`k`, with :math:`s_k = h_k / w_k` and
:math:`\xi = (x - x_k)/w_k`,

.. math:: y = y_k + \frac{h_k\,[s_k \xi^2 + \delta_k \xi(1-\xi)]}
                       {s_k + (\delta_{k+1} + \delta_k - 2 s_k)\,\xi(1-\xi)},

.. math:: \frac{dy}{dx} = \frac{s_k^2\,[\delta_{k+1}\xi^2 + 2 s_k \xi(1-\xi) + \delta_k (1-\xi)^2]}
                               {[s_k + (\delta_{k+1} + \delta_k - 2 s_k)\,\xi(1-\xi)]^2},

and the inverse solves a quadratic in :math:`\xi`.  Outside :math:`[-B, B]` the map is
the identity (linear tails; the boundary derivatives are 1, so the map is
:math:`C^1`).  Widths and heights are a softmax of the network's outputs with
minimum sizes; interior derivatives are ``min_derivative + softplus(·)``, shifted so
that zero outputs give the identity.

Two bijectors use it: a coupling layer (masks and conditioners of
:mod:`.coupling`) and an autoregressive layer (a MADE, fast in the direction
chosen by ``fast``, as in :mod:`.autoregressive`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, model_validator
from torch import Tensor

from compose_gen import BuildContext, ComponentType, Params, hookimpl
from compose_gen_plugins.flows.autoregressive import MADEParams, MaskedAutoregressive, made_for
from compose_gen_plugins.flows.coupling import AdditiveCouplingParams, MaskedCoupling, coupling_args

__all__ = ["SplineCoupling", "SplineTransform", "rational_quadratic_spline"]


def _knots(raw: Tensor, bound: float, minimum: float) -> tuple[Tensor, Tensor]:
    """Knot positions ``[..., K+1]`` from ``-bound`` to ``bound`` and bin sizes ``[..., K]``."""
    bins = raw.shape[-1]
    weights = (raw - raw.amax(-1, keepdim=True)).exp()  # softmax, written out: torch's CPU kernel is ~5x slower
    sizes = minimum + (1 - minimum * bins) * weights / weights.sum(-1, keepdim=True)  # on a short last dimension
    inner = 2 * bound * torch.cumsum(sizes, dim=-1)[..., :-1] - bound
    edge = inner.new_full(inner.shape[:-1] + (1,), bound)
    knots = torch.cat([-edge, inner, edge], dim=-1)
    return knots, knots[..., 1:] - knots[..., :-1]


def _take(values: Tensor, index: Tensor) -> Tensor:
    return values.gather(-1, index[..., None]).squeeze(-1)


def rational_quadratic_spline(
    inputs: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    *,
    inverse: bool = False,
    bound: float = 3.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    """Apply the spline (or its inverse) elementwise; returns outputs and ``log|d out / d in|``.

    ``widths`` and ``heights`` are unnormalised, ``[..., K]``; ``derivatives`` are the
    ``K - 1`` unnormalised interior derivatives; all share ``inputs``' shape before
    the last dimension.  Inputs outside ``[-bound, bound]`` pass through unchanged.
    """
    x_knots, bin_widths = _knots(widths, bound, min_bin_width)
    y_knots, bin_heights = _knots(heights, bound, min_bin_height)
    identity_shift = math.log(math.expm1(1 - min_derivative))  # softplus(0 + shift) = 1 - min_derivative
    interior = min_derivative + F.softplus(derivatives + identity_shift)
    ones = interior.new_ones(interior.shape[:-1] + (1,))
    slopes = torch.cat([ones, interior, ones], dim=-1)

    inside = (inputs >= -bound) & (inputs <= bound)
    clamped = inputs.clamp(-bound, bound)
    knots = y_knots if inverse else x_knots
    index = (clamped[..., None] >= knots[..., 1:-1]).sum(-1)
    x_k, w_k, y_k, h_k = (_take(t, index) for t in (x_knots, bin_widths, y_knots, bin_heights))
    d_k, d_k1 = _take(slopes[..., :-1], index), _take(slopes[..., 1:], index)
    s_k = h_k / w_k
    curvature = d_k1 + d_k - 2 * s_k

    if inverse:
        offset = clamped - y_k
        a = h_k * (s_k - d_k) + offset * curvature
        b = h_k * d_k - offset * curvature
        c = -s_k * offset
        root = (b.square() - 4 * a * c).clamp_min(0).sqrt()
        xi = (2 * c / (-b - root)).clamp(0, 1)
    else:
        xi = (clamped - x_k) / w_k
    xi_one_minus = xi * (1 - xi)
    denominator = s_k + curvature * xi_one_minus
    numerator = s_k.square() * (d_k1 * xi.square() + 2 * s_k * xi_one_minus + d_k * (1 - xi).square())
    log_derivative = numerator.log() - 2 * denominator.log()
    if inverse:
        outputs, log_derivative = x_k + xi * w_k, -log_derivative
    else:
        outputs = y_k + h_k * (s_k * xi.square() + d_k * xi_one_minus) / denominator
    return torch.where(inside, outputs, inputs), torch.where(inside, log_derivative, torch.zeros_like(inputs))


class SplineTransform:
    """The spline as an elementwise transform of :mod:`.autoregressive` (``params``: ``[..., 3K-1, D]``)."""

    def __init__(
        self, bins: int, bound: float, min_bin_width: float, min_bin_height: float, min_derivative: float
    ) -> None:
        self.bins = bins
        self.params_per_feature = 3 * bins - 1
        self.options = dict(
            bound=bound, min_bin_width=min_bin_width, min_bin_height=min_bin_height, min_derivative=min_derivative
        )

    def _apply(self, values: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        # In float32 at least: from bf16 parameters (a network under CPU autocast) the knots, and so the log-determinant,
        # were 1-10% off per layer, which biased the trained objective.
        dtype = torch.promote_types(torch.promote_types(values.dtype, params.dtype), torch.float32)
        values, params = values.to(dtype), params.to(dtype)
        per_feature = params.movedim(-2, -1)
        widths, heights, derivatives = per_feature.split([self.bins, self.bins, self.bins - 1], dim=-1)
        return rational_quadratic_spline(values, widths, heights, derivatives, inverse=inverse, **self.options)

    def __call__(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._apply(z, params, inverse=False)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._apply(y, params, inverse=True)


class SplineCoupling(MaskedCoupling):
    r"""Coupling layer :math:`y = m \odot x + (1 - m) \odot \mathrm{RQS}(x;\ \mathrm{NN}(m \odot x, c))`.

    :math:`\log|\det J| = \sum_{i: m_i = 0}\log|\partial y_i/\partial x_i|`.  Masks and
    conditioners (MLP, or a convnet for images; last layer zero, so the layer
    starts as the identity) are those of :mod:`.coupling`.
    """

    def __init__(self, shape: tuple[int, ...], transform: SplineTransform, **kwargs: Any) -> None:
        """``transform``: the spline; the other arguments as for :class:`.coupling.MaskedCoupling`."""
        super().__init__(shape, transform.params_per_feature, **kwargs)
        self.transform = transform

    def _elementwise(self, inverse: bool) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
        spline = self.transform.inverse if inverse else self.transform

        def apply(values: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
            out, log_derivative = spline(values, params)
            return out, log_derivative.sum(-1)

        return apply

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.couple(x, context, self._elementwise(inverse=False))

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.couple(y, context, self._elementwise(inverse=True))


class _SplineOptions(Params):
    bins: int = Field(8, ge=2, description="number of bins K")
    bound: float = Field(3.0, gt=0, description="the spline acts on [-bound, bound]; identity outside")
    min_bin_width: float = Field(1e-3, gt=0, description="minimum bin width w_k, as a fraction of 2·bound")
    min_bin_height: float = Field(1e-3, gt=0, description="minimum bin height h_k, as a fraction of 2·bound")
    min_derivative: float = Field(1e-3, gt=0, lt=1, description="minimum interior knot derivative δ_k")

    @model_validator(mode="after")
    def _bins_fit(self) -> "_SplineOptions":
        for name in ("min_bin_width", "min_bin_height"):
            if getattr(self, name) * self.bins >= 1:
                raise ValueError(f"{name} x bins must be below 1, got {getattr(self, name)} x {self.bins}")
        return self

    def transform(self) -> SplineTransform:
        return SplineTransform(self.bins, self.bound, self.min_bin_width, self.min_bin_height, self.min_derivative)


class SplineCouplingParams(_SplineOptions, AdditiveCouplingParams):
    """A rational-quadratic spline coupling layer: a coupling layer's mask and conditioner, a spline's bins."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"shape": [4], "hidden": [16], "bins": 4},
                {"shape": [5], "hidden": [8], "mask": "alternating", "flip": True, "context_features": 2},
                {"shape": [1, 2, 2], "hidden": [8], "bins": 3, "bound": 2.0, "mask": "checkerboard"},
                {"shape": [2, 2, 2], "hidden": [4], "mask": "channel", "conditioner": "mlp", "context_features": 1},
            ]
        }
    )


class SplineAutoregressiveParams(_SplineOptions, MADEParams):
    """A rational-quadratic spline autoregressive layer (MADE conditioner)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"shape": [3], "hidden": [12], "bins": 4},
                {"shape": [4], "hidden": [8], "bins": 3, "fast": "inverse", "order": "random", "context_features": 2},
            ]
        }
    )
    fast: Literal["forward", "inverse"] = Field("forward", description="forward: density pass (MAF); inverse: IAF")


def build_spline_coupling(params: SplineCouplingParams, ctx: BuildContext) -> SplineCoupling:
    """Rational-quadratic spline coupling with linear tails (Durkan et al. 2019).

    y = m ⊙ x + (1 − m) ⊙ RQS(x; θ(m ⊙ x, c)),  log|det ∂y/∂x| = Σ_{i: mᵢ = 0} log RQS'(xᵢ),
    RQS a monotone rational-quadratic spline on [−B, B] (B = bound) with K bins (K = bins): in bin k, with
    s_k = h_k/w_k and ξ = (x − x_k)/w_k,  RQS(x) = y_k + h_k [s_k ξ² + δ_k ξ(1 − ξ)] / [s_k + (δ_{k+1} + δ_k − 2s_k) ξ(1 − ξ)],
    the identity outside [−B, B] (δ = 1 at ±B).  The conditioner θ gives the bin widths w_k and heights h_k (softmax,
    with minimum sizes) and the interior derivatives δ_k; its last layer starts at zero, so the layer starts as the identity.

    Durkan et al. 2019, "Neural Spline Flows"; coupling: Dinh et al. 2017, "Density Estimation Using Real NVP".
    """
    return SplineCoupling(transform=params.transform(), **coupling_args(params))


def build_spline_autoregressive(params: SplineAutoregressiveParams, ctx: BuildContext) -> MaskedAutoregressive:
    """Rational-quadratic spline autoregressive layer, MADE-conditioned (Durkan et al. 2019).

    fast: forward (MAF):  y_d = RQS(x_d; θ_d(x_{<d}, c)), one MADE pass from data x to noise y, D passes back;
    fast: inverse (IAF):  x_d = RQS(y_d; θ_d(y_{<d}, c)), one pass from noise to data, D passes for the density;
    log|det ∂y/∂x| = Σ_d log|∂y_d/∂x_d|, a sum over the D features in the MADE's ordering.

    RQS is the monotone rational-quadratic spline of spline_coupling (K bins on [−B, B], the identity outside),
    its 3K − 1 parameters per feature given by a MADE whose output d sees only the features before d.

    Durkan et al. 2019, "Neural Spline Flows"; Germain et al. 2015, "MADE: Masked Autoencoder for Distribution
    Estimation"; Papamakarios et al. 2017, "Masked Autoregressive Flow for Density Estimation"; Kingma et al. 2016,
    "Improved Variational Inference with Inverse Autoregressive Flow".
    """
    transform = params.transform()
    return MaskedAutoregressive(
        tuple(params.shape), transform, made_for(params, transform.params_per_feature), params.fast
    )


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("spline_coupling", "bijector", SplineCouplingParams, build_spline_coupling),
        ComponentType("spline_autoregressive", "bijector", SplineAutoregressiveParams, build_spline_autoregressive),
    ]
