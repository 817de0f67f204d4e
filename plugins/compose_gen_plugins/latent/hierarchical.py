r"""A two-level hierarchical VAE with top-down inference (Sønderby et al. 2016, "Ladder Variational Autoencoders").

Generative model :math:`p(z_2)\,p(z_1|z_2)\,p(x|z_1)`; inference runs in the same
top-down order, :math:`q(z_2|x)\,q(z_1|x, z_2)`, where the bottom posterior merges
a bottom-up estimate :math:`\hat q(z_1|x) = \mathcal{N}(\hat\mu, \hat\sigma^2)` with the
top-down prior :math:`p(z_1|z_2) = \mathcal{N}(\mu_p, \sigma_p^2)` by precision weighting
(their eq. 17–19):

.. math:: \sigma_q^{-2} = \hat\sigma^{-2} + \sigma_p^{-2}, \qquad
          \mu_q = \sigma_q^2\,(\hat\mu\,\hat\sigma^{-2} + \mu_p\,\sigma_p^{-2}).

The bound is

.. math:: \mathrm{ELBO} = \mathbb{E}_q[\log p(x|z_1)] - \mathrm{KL}(q(z_2|x)\,\|\,p(z_2))
          - \mathbb{E}_{q(z_2|x)}[\mathrm{KL}(q(z_1|x,z_2)\,\|\,p(z_1|z_2))],

with both KLs in closed form when the distributions allow (Gaussian ones do).
Each of the ``k`` draws of :math:`z_2` gets one draw of :math:`z_1`, so the IWAE
objective works too.  A code for interpolation holds both levels, z₁ as its offset from
:math:`p(z_1|z_2)` in units of :math:`\sigma_p`, so paths start and end at reconstructions
(of an unconditional model; a conditional one's row is decoded under its first image's condition).
``conditional_prior`` is any diagonal-Gaussian encoder
applied to :math:`z_2` (e.g. a ``gaussian_encoder``).  With a ``context`` c every
network also reads c (a conditional VAE, Sohn et al. 2015), or the parts
``conditioned`` names.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from compose_gen import BuildContext, ComponentType, Ref, hookimpl
from compose_gen_plugins.latent.model import (
    caution_unbounded,
    decoded_log_prob,
    in_data_space,
    Evidence,
    LatentLevel,
    LatentVariableModel,
    ObjectiveParams,
    as_normal,
    draw,
    kl_or_estimate,
    location,
    prior_given,
    sample_prior,
)

__all__ = ["HierarchicalVAE", "HierarchicalParams", "build_hierarchical_vae", "precision_weighted"]


def precision_weighted(bottom_up: Distribution, top_down: Distribution) -> Distribution:
    """N(μ_q, σ_q²) with σ_q⁻² = σ̂⁻² + σ_p⁻², μ_q = σ_q²(μ̂σ̂⁻² + μ_pσ_p⁻²), broadcast over batch dimensions."""
    a, b = as_normal(bottom_up, "bottom-up posterior"), as_normal(top_down, "conditional prior")
    if a.loc.shape[-1:] != b.loc.shape[-1:]:
        raise ValueError(
            f"encoder_bottom gives z₁ of {a.loc.shape[-1]} values, conditional_prior of {b.loc.shape[-1]}: make their latent sizes agree"
        )
    precision_a, precision_b = a.scale.pow(-2), b.scale.pow(-2)
    variance = 1 / (precision_a + precision_b)
    loc = variance * (a.loc * precision_a + b.loc * precision_b)
    return Independent(Normal(loc, variance.sqrt(), validate_args=False), 1, validate_args=False)


class HierarchicalVAE(LatentVariableModel):
    """p(z₂)p(z₁|z₂)p(x|z₁) with q(z₂|x)q(z₁|x,z₂); see the module docstring."""

    inference_parts = frozenset({"encoder_top", "encoder_bottom"})

    def __init__(
        self,
        encoder_top: nn.Module,
        encoder_bottom: nn.Module,
        conditional_prior: nn.Module,
        prior: nn.Module,
        decoder: nn.Module,
        objective: ObjectiveParams,
    ) -> None:
        parts = {"encoder_top": encoder_top, "encoder_bottom": encoder_bottom, "conditional_prior": conditional_prior}
        super().__init__(objective, {**parts, "prior": prior, "decoder": decoder})
        self.encoder_top, self.encoder_bottom = encoder_top, encoder_bottom
        self.conditional_prior, self.prior, self.decoder = conditional_prior, prior, decoder
        self.discrete = getattr(decoder, "discrete", False)

    def evidence(self, x: Tensor, k: int, exact_kl: bool, context: Tensor | None = None) -> Evidence:
        q_top = self.call_part("encoder_top", x, context)
        z_top, log_q_top = draw(q_top, k, with_log_prob=not exact_kl)
        kl_top, exact = kl_or_estimate(q_top, prior_given(self.prior, self.given("prior", context)), z_top, log_q_top, exact_kl)
        p_bottom = self.call_part("conditional_prior", z_top, context)
        q_bottom = precision_weighted(self.call_part("encoder_bottom", x, context), p_bottom)
        z_bottom = q_bottom.rsample()
        kl_bottom, exact = kl_or_estimate(q_bottom, p_bottom, z_bottom, None, exact)
        return Evidence(decoded_log_prob(self.call_part("decoder", z_bottom, context), x), kl_top + kl_bottom, exact)

    def sample(self, n: int, temperature: float = 1.0, mean: bool = True, context: Tensor | None = None) -> Tensor:
        z_top = sample_prior(self.prior, n, self.given("prior", context), temperature)
        p_bottom = as_normal(self.call_part("conditional_prior", z_top, context), "conditional prior")
        z_bottom = Normal(p_bottom.loc, p_bottom.scale * temperature, validate_args=False).sample()
        px = self.call_part("decoder", z_bottom, context)
        return px.mean if mean else px.sample()

    def encode(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Both levels' posterior means as one vector ``(z₂, ε₁)`` per example: z₂, then z₁ as its offset
        ε₁ = (μ_q − μ_p) / σ_p from p(z₁|z₂) = N(μ_p, σ_p²), the generative model's own noise.

        :meth:`decode` inverts it, so a path between two encodings starts and ends at their
        reconstructions and moves both levels (only z₂ would end at the top-down prior's mean).
        """
        top, bottom = self.levels(x, context)
        p_bottom = as_normal(bottom.prior, "conditional prior")
        offset = (bottom.posterior.mean - p_bottom.loc) / p_bottom.scale
        return torch.cat([location(top.posterior).flatten(1), offset.flatten(1)], -1)

    def decode(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """The decoder's mean at z₁ = μ_p + σ_p ε₁, where p(z₁|z₂) = N(μ_p, σ_p²), for ``z = (z₂, ε₁)`` (see :meth:`encode`)."""
        top_shape = prior_given(self.prior, self.given("prior", context)).event_shape
        z_top = z[:, : top_shape.numel()].unflatten(1, top_shape)
        p_bottom = as_normal(self.call_part("conditional_prior", z_top, context), "conditional prior")
        z_bottom = p_bottom.loc + p_bottom.scale * z[:, top_shape.numel() :].reshape(p_bottom.loc.shape)
        return self.call_part("decoder", z_bottom, context).mean

    def levels(self, x: Tensor, context: Tensor | None = None) -> list[LatentLevel]:
        """q(z₂|x) against p(z₂), and q(z₁|x, z₂) against p(z₁|z₂) at z₂ = the posterior mean of z₂, not averaged
        over its draws: so the per-dimension KL and active units of z₁ that ``posterior_collapse`` reports are those of
        the bottom layer under the top posterior's mean, which can differ from the bound's E_q(z₂|x)[KL]."""
        q_top = self.call_part("encoder_top", x, context)
        p_bottom = self.call_part("conditional_prior", location(q_top), context)
        q_bottom = precision_weighted(self.call_part("encoder_bottom", x, context), p_bottom)
        return [LatentLevel("z2", q_top, prior_given(self.prior, self.given("prior", context))), LatentLevel("z1", q_bottom, p_bottom)]


class HierarchicalParams(ObjectiveParams):
    parts = ("encoder_top", "encoder_bottom", "conditional_prior", "prior", "decoder")

    encoder_top: Ref("encoder") = Field(..., description="encoder q(z₂|x)")  # type: ignore[valid-type]
    encoder_bottom: Ref("encoder") = Field(  # type: ignore[valid-type]
        ..., description="bottom-up estimate q̂(z₁|x), merged with p(z₁|z₂)"
    )
    conditional_prior: Ref("encoder") = Field(  # type: ignore[valid-type]
        ..., description="p(z₁|z₂), a diagonal-Gaussian encoder applied to z₂"
    )
    prior: Ref("prior", "flow") = Field(..., description="prior p(z₂): a prior or a flow")  # type: ignore[valid-type]
    decoder: Ref("decoder") = Field(..., description="decoder p(x|z₁)")  # type: ignore[valid-type]


def build_hierarchical_vae(p: HierarchicalParams, ctx: BuildContext) -> HierarchicalVAE:
    """Two-level hierarchical VAE with top-down, precision-weighted inference (Sønderby et al. 2016).

    p(z₂) p(z₁|z₂) p(x|z₁), inferred top-down as q(z₂|x) q(z₁|x, z₂), where q(z₁|x, z₂) merges the bottom-up
    N(μ̂, σ̂²) with p(z₁|z₂) = N(μ_p, σ_p²): σ_q⁻² = σ̂⁻² + σ_p⁻², μ_q = σ_q² (μ̂ σ̂⁻² + μ_p σ_p⁻²).
    ELBO = E_q[log p(x|z₁)] − KL(q(z₂|x) ‖ p(z₂)) − E_q(z₂|x)[KL(q(z₁|x, z₂) ‖ p(z₁|z₂))].

    Sønderby et al. 2016, "Ladder Variational Autoencoders".
    """
    c = ctx.component
    caution_unbounded(p.x, c(p.decoder), ctx)
    model = HierarchicalVAE(c(p.encoder_top), c(p.encoder_bottom), c(p.conditional_prior), c(p.prior), c(p.decoder), p)
    return in_data_space(model, p, ctx)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [ComponentType("hierarchical_vae", "loss", HierarchicalParams, build_hierarchical_vae)]
