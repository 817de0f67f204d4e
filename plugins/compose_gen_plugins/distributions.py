"""Priors: unconditional distributions over latents.

A prior module's ``forward()`` returns a ``torch.distributions`` object whose
``log_prob`` sums the event dimensions.  In the graph, ``prior.sample(x)`` draws
``len(x)`` latents (``x`` may also be a count), with an optional temperature
that scales the standard deviation (Kingma & Dhariwal 2018).
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, register_kl

from compose_gen import BuildContext, ComponentType, Params, Size, draw_count, hookimpl
from compose_gen.core import describe_value

__all__ = ["DiagonalNormal", "Prior", "StandardNormal", "UnitNormal", "temperature_of"]


def temperature_of(value: Any) -> float | Tensor:
    """``value`` as a float, or a 0-dimensional tensor as it is: a temperature is a number (NumPy's too); a graph's
    ``noise(x)`` or ``noise.sample(x, x)`` passes a batch, which is refused."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, Tensor) and value.dim() == 0 and value.dtype != torch.bool and not value.is_complex():
        return value
    raise TypeError(f"a prior's temperature is a number, got {describe_value(value)}; a graph draws from a prior as noise.sample(x) or noise.sample(64)")


class Prior(nn.Module):
    """Base of the Gaussian-family priors here: sampling helpers over ``forward()``."""

    graph_methods = ("sample", "rsample")
    event_shape: torch.Size

    def forward(self, temperature: float = 1.0) -> Distribution:
        raise NotImplementedError

    def sample(self, like: Tensor | int, temperature: float = 1.0) -> Tensor:
        """``len(like)`` (or ``like``) draws, without gradient."""
        with torch.no_grad():
            return self.rsample(like, temperature)

    def rsample(self, like: Tensor | int, temperature: float = 1.0) -> Tensor:
        """``len(like)`` (or ``like``) reparameterised draws."""
        n = draw_count(like)
        return self(temperature).rsample((n,))


class UnitNormal(Normal):
    """``Normal(0, 1)`` elementwise, of the given (zero) ``loc`` and (unit) ``scale`` tensors.

    A type of its own so that ``kl_divergence`` takes the closed form against the
    standard normal, which needs no division by the prior's scale.
    """


@register_kl(Normal, UnitNormal)
def _kl_normal_unit(q: Normal, p: UnitNormal) -> Tensor:
    r"""KL(N(μ, σ²) ‖ N(0, 1)) = ½(μ² + σ² − 1) − log σ elementwise (Kingma & Welling 2014, appendix B)."""
    kl = 0.5 * (q.loc.square() + q.scale.square() - 1) - q.scale.log()
    if kl.shape[kl.dim() - len(p.batch_shape) :] == p.batch_shape:  # the usual case: the prior broadcasts to q
        return kl
    return kl.expand(torch.broadcast_shapes(kl.shape, p.batch_shape))


class StandardNormal(Prior):
    """p(z) = N(z; 0, I), the prior of the VAE (Kingma & Welling 2014) and most flows and GANs."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.event_shape = torch.Size(shape)
        self.register_buffer("loc", torch.zeros(shape))
        self.register_buffer("scale", torch.ones(shape))

    def forward(self, temperature: float = 1.0) -> Distribution:
        if temperature_of(temperature) == 1.0:
            elementwise = UnitNormal(self.loc, self.scale, validate_args=False)
        else:
            elementwise = Normal(self.loc, self.scale * temperature, validate_args=False)
        return Independent(elementwise, len(self.event_shape), validate_args=False)


class DiagonalNormal(Prior):
    """p(z) = N(z; μ, diag σ²) with learned μ and log σ (e.g. Tomczak & Welling 2018's baseline)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.event_shape = torch.Size(shape)
        self.loc = nn.Parameter(torch.zeros(shape))
        self.log_scale = nn.Parameter(torch.zeros(shape))

    def forward(self, temperature: float = 1.0) -> Distribution:
        # Unvalidated, as the other priors: torch's checks read the device back (a host sync, three per training step)
        # and refuse T = 0 (the mode, a zero σ).
        elementwise = Normal(self.loc, self.log_scale.exp() * temperature_of(temperature), validate_args=False)
        return Independent(elementwise, len(self.event_shape), validate_args=False)


class PriorParams(Params):
    shape: list[Size] = Field(..., min_length=1, description="event shape of the latent")


def build_standard_normal(p: PriorParams, ctx: BuildContext) -> StandardNormal:
    """Standard normal N(0, I) over an event of the given shape.

    p(z) = N(z; 0, I) = (2π)^{−D/2} exp(−‖z‖²/2),  D the number of values of the event;
    at temperature T draws come from N(0, T² I), whose density is ∝ p(z)^{1/T²}.

    Kingma & Welling 2014, "Auto-Encoding Variational Bayes"; temperature: Kingma & Dhariwal 2018, "Glow: Generative
    Flow with Invertible 1x1 Convolutions".
    """
    return StandardNormal(tuple(p.shape))


def build_diagonal_normal(p: PriorParams, ctx: BuildContext) -> DiagonalNormal:
    """Diagonal Gaussian with learned mean and scale.

    p(z) = N(z; μ, diag σ²) = Π_j (2π σ_j²)^{−1/2} exp(−(z_j − μ_j)² / (2σ_j²)),  σ = exp(log σ),
    μ and log σ learned per value of the event, starting at 0 (the standard normal); at temperature T, σ times T.

    Kingma & Welling 2014, "Auto-Encoding Variational Bayes" (a prior p_θ(z) whose parameters are learned with the model).
    """
    return DiagonalNormal(tuple(p.shape))


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("standard_normal", "prior", PriorParams, build_standard_normal),
        ComponentType("diagonal_normal", "prior", PriorParams, build_diagonal_normal),
    ]
