r"""Flow posteriors: q(z|x) as a normalizing flow conditioned on the encoder.

The encoder gives a diagonal Gaussian :math:`q_0(z_0|x)` and a context vector
:math:`h(x)`; bijectors :math:`T` in their sampling (``inverse``) direction map
:math:`z_0` to :math:`z = T(z_0; h)`, so

.. math:: \log q(z|x) = \log q_0(z_0|x) - \log\left|\det \frac{\partial T(z_0; h)}{\partial z_0}\right|,

which enters the ELBO's Monte Carlo KL :math:`\log q(z|x) - \log p(z)` (Rezende &
Mohamed 2015, "Variational Inference with Normalizing Flows"; Kingma et al. 2016,
"Improved Variational Inference with Inverse Autoregressive Flow").  Use ``iaf``
layers with ``context_features`` (fast in the sampling direction), or
``amortized_planar`` layers, whose parameters are functions of :math:`h` as in
Rezende & Mohamed's amortised planar flow.  Any other bijector works too.
"""

from __future__ import annotations

import torch
from pydantic import ConfigDict, Field
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, constraints

from compose_gen import Bijector, BuildContext, Chain, ComponentType, Params, Ref, broadcast_value, hookimpl
from compose_gen_plugins.flows import context_shape_of
from compose_gen_plugins.flows.planar import constrained_u, planar_density, planar_sample
from compose_gen_plugins.latent.conditionals import network_output, positive_scale, require_width

__all__ = ["AmortizedPlanar", "FlowEncoder", "FlowPosterior"]


class FlowPosterior(Distribution):
    """z = T(z_0; h), z_0 ~ ``base``; ``transform.inverse`` is the sampling direction."""

    has_rsample = True
    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, base: Distribution, transform: Bijector, context: Tensor | None) -> None:
        self.base, self.transform, self.context = base, transform, context
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def _context(self, z: Tensor) -> Tensor | None:
        if self.context is None:
            return None
        return self.context.expand(*z.shape[: z.dim() - len(self.event_shape)], self.context.shape[-1])

    def rsample_with_log_prob(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> tuple[Tensor, Tensor]:
        """Draws and their log q, from the sampling direction's log-determinant alone."""
        z0 = self.base.rsample(torch.Size(sample_shape))
        z, ladj = self.transform.inverse(z0, self._context(z0))
        return z, self.base.log_prob(z0) - ladj

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> Tensor:
        return self.rsample_with_log_prob(sample_shape)[0]

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) of any z, through the density direction (slow for IAF: one pass per dimension)."""
        z = broadcast_value(z, self)
        z0, ladj = self.transform(z, self._context(z))
        return self.base.log_prob(z0) + ladj

    @property
    def location(self) -> Tensor:
        """T applied to the base mean: a point summary of q (not its exact mean)."""
        return self.transform.inverse(self.base.mean, self.context)[0]


class FlowEncoder(nn.Module):
    """x -> (μ, σ, h) by one network, then q(z|x) = :class:`FlowPosterior` of N(μ, σ²) through the bijectors."""

    def __init__(self, net: nn.Module, latent: int, context_features: int, transform: Bijector) -> None:
        super().__init__()
        self.net, self.latent, self.context_features, self.transform = net, latent, context_features, transform

    def forward(self, x: Tensor, condition: Tensor | None = None) -> FlowPosterior:
        """q(z|x), or q(z|x, c) given a condition c (a conditional VAE's), which the network reads beside x."""
        out = network_output(self.net, x, condition)
        require_width(
            out,
            2 * self.latent + self.context_features,
            "2·latent + context_features",
            f"μ and σ of each of the {self.latent} latents, then the {self.context_features} context features of its flow",
        )
        loc, raw, context = out.split([self.latent, self.latent, self.context_features], dim=-1)
        base = Independent(Normal(loc, positive_scale(raw), validate_args=False), 1, validate_args=False)
        return FlowPosterior(base, self.transform, context if self.context_features else None)


class AmortizedPlanar(Bijector):
    r"""Planar flow with per-example parameters :math:`(u, w, b) = A h + c` from a context :math:`h`.

    Sampling direction :math:`x = z + \hat u \tanh(w^\top z + b)`, with
    :math:`\log|\det| = \log|1 + \tanh'(w^\top z + b)\, w^\top \hat u|` and
    :math:`\hat u = u + (m(w^\top u) - w^\top u)\, w / \lVert w\rVert^2`,
    :math:`m(a) = \operatorname{softplus}(a) - 1`, so :math:`w^\top\hat u > -1` keeps it
    invertible (Rezende & Mohamed 2015, eq. 10–12 and appendix A.1).  The density
    direction solves :math:`w^\top x + b = a + w^\top\hat u \tanh a` for :math:`a` by
    bisection, then one Newton step with autograd on (the implicit-function gradient).
    """

    fast = "inverse"

    def __init__(self, features: int, context_features: int) -> None:
        super().__init__((features,))
        self.context_shape = torch.Size([context_features])
        self.features = features
        self.hyper = nn.Linear(context_features, 2 * features + 1)

    def _per_example(self, context: Tensor | None, batch: torch.Size) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``û``, ``w``, ``b`` and ``1 + wᵀû`` for every example of ``batch``."""
        if context is None:
            raise ValueError(f"AmortizedPlanar needs a context of {self.context_shape[0]} features, got none")
        u, w, b = self.hyper(context).expand(*batch, -1).split([self.features, self.features, 1], dim=-1)
        u_hat, slack = constrained_u(u, w)
        return u_hat, w, b.squeeze(-1), slack

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return planar_sample(z, *self._per_example(context, self.batch_shape(z)))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return planar_density(x, *self._per_example(context, self.batch_shape(x)))


class FlowEncoderParams(Params):
    net: Ref("network") = Field(..., description="network x -> 2·latent + context_features numbers")  # type: ignore[valid-type]
    latent: int = Field(..., gt=0, description="size of z")
    context_features: int = Field(0, ge=0, description="size of the context h(x) given to conditional bijectors")
    bijectors: list[Ref("bijector")] = Field(..., min_length=1, description="listed as a flow's are, z → noise (density direction): sampling applies the last one to z₀ first")  # type: ignore[valid-type]


class AmortizedPlanarParams(Params):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"features": 3, "context_features": 2}, {"features": 1, "context_features": 4}]}
    )
    features: int = Field(..., gt=0, description="size of z")
    context_features: int = Field(..., gt=0, description="size of the context h")


def build_flow_encoder(p: FlowEncoderParams, ctx: BuildContext) -> FlowEncoder:
    """Flow posterior q(z|x): a Gaussian through bijectors conditioned on h(x) (Rezende & Mohamed 2015; Kingma et al. 2016).

    z₀ ~ N(μ(x), diag σ(x)²), z_K = f_1 ∘ … ∘ f_K(z₀; h(x)) with f_k the sampling direction (inverse) of the k-th
    listed bijector, listed as a flow's are (z → noise, so the last acts on z₀ first), and
    log q(z_K|x) = log N(z₀; μ(x), diag σ(x)²) − Σ_k log|det ∂f_k|,
    so the ELBO counts every layer's log-determinant.

    Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows"; Kingma et al. 2016,
    "Improved Variational Inference with Inverse Autoregressive Flow".
    """
    bijectors = [ctx.component(ref) for ref in p.bijectors]
    for i, bijector in enumerate(bijectors):
        if tuple(bijector.event_shape) != (p.latent,):
            raise ValueError(f"bijectors[{i}] acts on event shape {tuple(bijector.event_shape)}, not the latent's ({p.latent},)")
        wanted = getattr(bijector, "context_shape", None)
        if wanted is not None and tuple(wanted) != (p.context_features,):
            raise ValueError(
                f"bijectors[{i}] expects a context of shape {tuple(wanted)}, the encoder gives ({p.context_features},)"
            )
    if p.context_features and all(context_shape_of(b) is None for b in bijectors):
        # as a network with no context_features refuses a context: h(x) would be made and dropped, the flow the same for every x
        raise ValueError(
            f"context_features is {p.context_features}, but none of the bijectors takes a context, so h(x) would go unused and the "
            f"flow would be the same for every x: give them context_features: {p.context_features} (iaf, couplings; amortized_planar "
            "always takes one), or set context_features: 0 and the network's output to 2·latent"
        )
    return FlowEncoder(ctx.component(p.net), p.latent, p.context_features, Chain(bijectors))


def build_amortized_planar(p: AmortizedPlanarParams, ctx: BuildContext) -> AmortizedPlanar:
    """Planar flow whose u, w, b are linear functions of a context (Rezende & Mohamed 2015, amortised).

    f(z) = z + û(h) tanh(w(h)ᵀz + b(h)), log|det ∂f/∂z| = log|1 + û(h)ᵀ ψ(z)| with
    ψ(z) = (1 − tanh²(wᵀz + b)) w, and û the projection of u that keeps wᵀû ≥ −1 (invertible).

    Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows", appendix A.1.
    """
    return AmortizedPlanar(p.features, p.context_features)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("flow_encoder", "encoder", FlowEncoderParams, build_flow_encoder),
        ComponentType("amortized_planar", "bijector", AmortizedPlanarParams, build_amortized_planar),
    ]
