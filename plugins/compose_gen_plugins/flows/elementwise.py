"""Elementwise bijectors: learned affine, NICE's diagonal scaling, logit/sigmoid preprocessing."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field
from torch import Tensor, nn
from torch.distributions import SigmoidTransform, constraints, transform_to

from compose_gen import Bijector, BuildContext, ComponentType, Params, hookimpl
from compose_gen_plugins.flows import EventShape

__all__ = ["ElementwiseAffine", "Inverse", "Logit"]


class ElementwiseAffine(Bijector):
    r"""Learned elementwise affine map :math:`y = x \odot e^{s} + b`.

    :math:`\log|\det J| = \sum_i s_i`.  Without ``shift`` it is the diagonal
    scaling layer :math:`y = S x` of NICE (Dinh et al. 2015, arXiv:1410.8516).
    Starts as the identity.
    """

    def __init__(self, shape: tuple[int, ...], shift: bool = True) -> None:
        super().__init__(shape)
        self.log_scale = nn.Parameter(torch.zeros(shape))
        self.shift = nn.Parameter(torch.zeros(shape)) if shift else None

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y = x * self.log_scale.exp()
        if self.shift is not None:
            y = y + self.shift
        return y, self.log_scale.sum().expand(self.batch_shape(x))

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.shift is not None:
            y = y - self.shift
        return y * (-self.log_scale).exp(), -self.log_scale.sum().expand(self.batch_shape(y))


class _OpenUnitInterval(constraints.Constraint):
    """(0, 1) without its ends, where a logit without margin is finite (torch.distributions has no open interval)."""

    def check(self, value: Tensor) -> Tensor:
        return (value > 0) & (value < 1)

    def __repr__(self) -> str:
        return "OpenInterval(lower_bound=0.0, upper_bound=1.0)"


open_unit_interval = _OpenUnitInterval()
transform_to.register(_OpenUnitInterval)(lambda constraint: SigmoidTransform())


class Logit(Bijector):
    r"""Logit with a margin, the preprocessing of RealNVP (Dinh et al. 2017, arXiv:1605.08803).

    :math:`y = \operatorname{logit}(p)`, :math:`p = \alpha + (1 - 2\alpha)\,x`, maps
    :math:`x \in [0, 1]` into :math:`[\operatorname{logit}\alpha, \operatorname{logit}(1-\alpha)]`;
    :math:`\log|\det J| = \sum_i \log(1 - 2\alpha) - \log p_i - \log(1 - p_i)`.
    The margin keeps pixels at 0 and 1 finite.
    """

    def __init__(self, shape: tuple[int, ...], alpha: float = 0.05) -> None:
        super().__init__(shape)
        self.alpha = alpha
        bound = math.log(alpha / (1 - alpha)) if alpha > 0 else -math.inf
        self.domain = open_unit_interval if alpha == 0 else constraints.unit_interval  # logit(0) and logit(1) are infinite
        self.codomain = constraints.real if alpha == 0 else constraints.interval(bound, -bound)

    def _ladj(self, surprisal: Tensor) -> Tensor:
        """``Σᵢ log(1 − 2α) − log pᵢ − log(1 − pᵢ)`` from ``surprisal`` = ``−log p − log(1 − p)``, elementwise."""
        return (math.log1p(-2 * self.alpha) + surprisal).flatten(-len(self.event_shape)).sum(-1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        p = self.alpha + (1 - 2 * self.alpha) * x
        return p.logit(), self._ladj(-p.log() - (-p).log1p())

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # −log σ(y) − log(1 − σ(y)) = softplus(−y) + softplus(y), exact in the tails where 1 − σ(y) rounds
        p = y.sigmoid()
        return (p - self.alpha) / (1 - 2 * self.alpha), -self._ladj(F.softplus(-y) + F.softplus(y))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}"


class Inverse(Bijector):
    """The inverse ``f⁻¹`` of a bijector ``f``: its directions, domains and speeds swapped."""

    def __init__(self, bijector: Bijector) -> None:
        super().__init__(bijector.out_event_shape)
        self.bijector = bijector
        self.domain, self.codomain = bijector.codomain, bijector.domain
        self.fast = {"forward": "inverse", "inverse": "forward"}.get(bijector.fast, "both")
        self.stochastic_ladj = bijector.stochastic_ladj
        self.context_shape = getattr(bijector, "context_shape", None)

    @property
    def out_event_shape(self) -> torch.Size:
        return self.bijector.event_shape

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.bijector.inverse(x, context)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.bijector(y, context)


class AffineParams(Params):
    """A learned elementwise affine bijector."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"shape": [3]}, {"shape": [2, 2, 2], "shift": False}]})
    shape: EventShape = Field(..., description="event shape of x")
    shift: bool = Field(True, description="learn the shift b of y = x·e^s + b; false: scaling y = x·e^s")


class ScalingParams(Params):
    """NICE's diagonal scaling layer."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"shape": [4]}]})
    shape: EventShape = Field(..., description="event shape of x")


class LogitParams(Params):
    """Logit (or, for ``sigmoid``, its inverse) with margin ``alpha``."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"shape": [4]}, {"shape": [1, 2, 2], "alpha": 0.0}]})
    shape: EventShape = Field(..., description="event shape of x")
    alpha: float = Field(0.05, ge=0.0, lt=0.5, description="margin α: y = logit(α + (1 - 2α)x)")


def build_affine(params: AffineParams, ctx: BuildContext) -> ElementwiseAffine:
    """Learned elementwise affine map y = x·exp(s) + b.

    yᵢ = xᵢ exp(sᵢ) + bᵢ,  log|det ∂y/∂x| = Σᵢ sᵢ, with one learned sᵢ and bᵢ per value of the event (b = 0 with
    ``shift: false``); s = b = 0 at the start, the identity.

    Dinh et al. 2015, "NICE: Non-linear Independent Components Estimation" (its diagonal scaling, here with a shift).
    """
    return ElementwiseAffine(tuple(params.shape), params.shift)


def build_scaling(params: ScalingParams, ctx: BuildContext) -> ElementwiseAffine:
    """NICE diagonal scaling y = x·exp(s) (Dinh et al. 2015).

    y = S x,  S = diag(exp(s)),  log|det ∂y/∂x| = Σᵢ sᵢ, with s learned and 0 at the start (the identity); NICE
    puts it last, nearest the prior, to weigh each latent dimension.

    Dinh et al. 2015, "NICE: Non-linear Independent Components Estimation".
    """
    return ElementwiseAffine(tuple(params.shape), shift=False)


def build_logit(params: LogitParams, ctx: BuildContext) -> Logit:
    """Logit preprocessing y = logit(α + (1 - 2α)x) for data in [0, 1] (Dinh et al. 2017).

    yᵢ = log pᵢ − log(1 − pᵢ),  pᵢ = α + (1 − 2α) xᵢ,  log|det ∂y/∂x| = Σᵢ [log(1 − 2α) − log pᵢ − log(1 − pᵢ)];
    the margin α keeps values 0 and 1 finite (α = 0: the plain logit, which takes only (0, 1), its ends excluded).

    Dinh et al. 2017, "Density Estimation Using Real NVP".
    """
    return Logit(tuple(params.shape), params.alpha)


def build_sigmoid(params: LogitParams, ctx: BuildContext) -> Inverse:
    """Sigmoid y = (sigmoid(x) - α) / (1 - 2α), the inverse of the logit preprocessing.

    yᵢ = (σ(xᵢ) − α) / (1 − 2α),  σ(x) = 1 / (1 + exp(−x)),
    log|det ∂y/∂x| = Σᵢ [log σ(xᵢ) + log(1 − σ(xᵢ)) − log(1 − 2α)]: maps [logit α, logit(1 − α)] onto [0, 1] (its
    domain and codomain; for α = 0 the reals onto (0, 1)), and the reals into (−α/(1 − 2α), (1 − α)/(1 − 2α)).

    Dinh et al. 2017, "Density Estimation Using Real NVP" (the inverse of its logit preprocessing).
    """
    return Inverse(Logit(tuple(params.shape), params.alpha))


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("affine", "bijector", AffineParams, build_affine),
        ComponentType("diagonal_scaling", "bijector", ScalingParams, build_scaling),
        ComponentType("logit", "bijector", LogitParams, build_logit),
        ComponentType("sigmoid", "bijector", LogitParams, build_sigmoid),
    ]
