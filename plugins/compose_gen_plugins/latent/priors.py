"""Richer priors p(z) for latent-variable models.

* ``gaussian_mixture`` — a learned mixture of diagonal Gaussians (Tomczak &
  Welling 2018, "VAE with a VampPrior", the MoG baseline; Dilokthanakul et al. 2016);
* a flow prior needs no type of its own: any ``flow`` component is a distribution
  (``prior: my_flow`` in an ``elbo``), and the KL falls back to its Monte Carlo
  estimate (Chen et al. 2017, "Variational Lossy Autoencoder").

The standard normal and learned diagonal Gaussian are ``standard_normal`` and
``diagonal_normal`` of the ``distributions`` plugin.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

from compose_gen import BuildContext, ComponentType, Params, draw_count, hookimpl
from compose_gen_plugins.distributions import Prior, temperature_of

__all__ = ["GaussianMixturePrior", "GaussianMixtureParams", "build_gaussian_mixture"]


class GaussianMixturePrior(Prior):
    """p(z) = Σ_k π_k N(z; μ_k, diag σ_k²), with learned logits of π, μ_k and log σ_k.

    Means start as draws from N(0, I) (so components are distinct) and scales at 1;
    the temperature scales every σ_k.  The choice of component is discrete, so
    draws are not reparameterised: ``sample`` only.
    """

    graph_methods = ("sample",)

    def __init__(self, latent: int, components: int) -> None:
        super().__init__()
        self.event_shape = torch.Size([latent])
        self.logits = nn.Parameter(torch.zeros(components))
        self.loc = nn.Parameter(torch.randn(components, latent))
        self.log_scale = nn.Parameter(torch.zeros(components, latent))

    def forward(self, temperature: float = 1.0) -> Distribution:
        mixture = Categorical(logits=self.logits, validate_args=False)
        component = Independent(Normal(self.loc, self.log_scale.exp() * temperature_of(temperature), validate_args=False), 1)
        return MixtureSameFamily(mixture, component, validate_args=False)

    def sample(self, like: Tensor | int, temperature: float = 1.0) -> Tensor:
        n = draw_count(like)
        with torch.no_grad():
            return self(temperature).sample((n,))

    def rsample(self, like: Tensor | int, temperature: float = 1.0) -> Tensor:
        raise NotImplementedError("a mixture of Gaussians has no reparameterised samples; use sample")


class GaussianMixtureParams(Params):
    latent: int = Field(..., gt=0, description="size of z")
    components: int = Field(10, gt=0, description="number of Gaussians")


def build_gaussian_mixture(p: GaussianMixtureParams, ctx: BuildContext) -> GaussianMixturePrior:
    """Learned mixture of diagonal Gaussians p(z) = Σ_k π_k N(μ_k, diag σ_k²).

    π = softmax(logits), μ_k and log σ_k learned; its KL to a posterior has no closed form, so the ELBO
    estimates it by Monte Carlo. Temperature T draws each component at σ_k·T about its own mean.

    Dilokthanakul et al. 2016, "Deep Unsupervised Clustering with Gaussian Mixture Variational Autoencoders";
    Tomczak & Welling 2018, "VAE with a VampPrior" (learned priors).
    """
    return GaussianMixturePrior(p.latent, p.components)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [ComponentType("gaussian_mixture", "prior", GaussianMixtureParams, build_gaussian_mixture)]
