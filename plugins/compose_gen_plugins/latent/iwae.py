r"""The importance-weighted bound (Burda et al. 2016, "Importance Weighted Autoencoders").

.. math:: \mathcal{L}_k(x) = \mathbb{E}_{z_{1..k} \sim q}\Big[\log \frac1k \sum_{i=1}^k
          \frac{p(x, z_i)}{q(z_i|x)}\Big], \qquad
          \mathrm{ELBO} = \mathcal{L}_1 \le \mathcal{L}_k \le \mathcal{L}_{k+1} \le \log p(x),

and :math:`\mathcal{L}_k \to \log p(x)` as :math:`k \to \infty`.  Trained as the
``iwae`` loss (a VAE with ``objective: iwae``); with large ``k`` it is also the
standard estimate of the test log-likelihood (``LatentVariableModel.log_likelihood``,
computed in chunks of draws so memory stays bounded whatever ``k``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compose_gen import BuildContext, ComponentType, hookimpl
from compose_gen_plugins.latent.elbo import VAE, VAEParams, build_elbo

__all__ = ["IWAEParams", "build_iwae"]


class IWAEParams(VAEParams):
    objective: Literal["iwae"] = Field("iwae", description="always the IWAE bound")
    samples: int = Field(5, gt=0, description="importance samples k")


def build_iwae(p: IWAEParams, ctx: BuildContext) -> VAE:
    """Negative k-sample importance-weighted bound of a VAE (Burda et al. 2016).

    L_k(x) = E_{z₁..z_k ~ q(z|x)}[log (1/k) Σᵢ p(x, zᵢ) / q(zᵢ|x)],  p(x, zᵢ) = p(x|zᵢ) p(zᵢ),
    ELBO = L_1 ≤ L_k ≤ L_{k+1} ≤ log p(x), and L_k → log p(x) as k → ∞ (k = samples).

    loss = −log (1/k) Σᵢ wᵢ, wᵢ = p(x|zᵢ) p(zᵢ) / q(zᵢ|x), for k independent reparameterised draws zᵢ ~ q(z|x), a
    log-mean-exp of the log-weights averaged over the batch; the logged elbo and kl are those of the same draws.
    No β or warm-up: the bound has no separate KL term.  A context c conditions the parts that read it, as in elbo.

    Burda et al. 2016, "Importance Weighted Autoencoders".
    """
    return build_elbo(p, ctx)  # the VAE, whose objective here is always iwae


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [ComponentType("iwae", "loss", IWAEParams, build_iwae)]
