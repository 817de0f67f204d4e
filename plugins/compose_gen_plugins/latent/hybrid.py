r"""The hybrid VAE-flow (Lucas et al. 2019, "Adaptive Density Estimation for Generative Models").

A VAE whose decoder models the features :math:`y = f(x)` of an invertible flow
:math:`f` (bijectors in their ``forward``, density, direction) instead of the
pixels, so that its simple factorised likelihood becomes a flexible one in data
space.  By the change of variables,

.. math:: \ln p(x) \ge \mathbb{E}_{q(z|x)}[\ln p(f(x)|z)] - \mathrm{KL}(q(z|x)\,\|\,p(z))
          + \ln\left|\det \frac{\partial f}{\partial x}\right|,

and samples are :math:`x = f^{-1}(y)`, :math:`y \sim p(y|z)`, :math:`z \sim p(z)`.
The encoder reads x; the decoder's event shape is that of y.  Trained with the
ELBO or the IWAE bound like any model of :mod:`.model`.  The decoder is marked as
one of y (``models_flow_features``), so that ``ancestral``, whose draws it would
give as x, refuses it: the loss's own model (``latent_model``) samples through f⁻¹.
"""

from __future__ import annotations

from pydantic import Field

from compose_gen import BuildContext, Chain, ComponentType, Ref, hookimpl
from compose_gen_plugins.latent.elbo import VAE, VAEParams
from compose_gen_plugins.latent.model import caution_unbounded, in_data_space

__all__ = ["HybridParams", "build_hybrid_vae_flow"]


class HybridParams(VAEParams):
    parts = (*VAEParams.parts, "bijectors")

    bijectors: list[Ref("bijector")] = Field(..., min_length=1, description="the flow f: x -> y")  # type: ignore[valid-type]


def build_hybrid_vae_flow(p: HybridParams, ctx: BuildContext) -> VAE:
    """Hybrid VAE-flow: ln p(x) ≥ E_q ln p(f(x)|z) − KL(q‖p) + ln|det ∂f/∂x| (Lucas et al. 2019)."""
    transform, decoder = Chain([ctx.component(ref) for ref in p.bijectors]), ctx.component(p.decoder)
    caution_unbounded(p.x, decoder, ctx, transform)
    decoder.models_flow_features = f"y = f(x) of the hybrid_vae_flow loss over bijectors {', '.join(map(repr, p.bijectors))}"
    return in_data_space(VAE(ctx.component(p.encoder), decoder, ctx.component(p.prior), p, transform), p, ctx)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [ComponentType("hybrid_vae_flow", "loss", HybridParams, build_hybrid_vae_flow)]
