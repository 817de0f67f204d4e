"""The evidence lower bound (Kingma & Welling 2014; Rezende et al. 2014).

    ELBO(x) = E_{q(z|x)}[log p(x|z)] − KL(q(z|x) ‖ p(z)) ≤ log p(x)

The KL is analytic when ``torch.distributions`` knows the pair (``kl: auto``
falls back to Monte Carlo otherwise) or the Monte Carlo estimate
``log q(z|x) − log p(z)`` at the reparameterised samples.  ``beta`` weights the
KL in the training loss (β-VAE, Higgins et al. 2017); the reported ``elbo`` is
always the true bound.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.distributions import Distribution, kl_divergence

from compose_gen import BuildContext, Loss, Params, Ref, Value

__all__ = ["ELBO", "ELBOParams", "kl_term"]


def kl_term(q: Distribution, p: Distribution, z: Tensor, mode: str) -> Tensor:
    """KL(q ‖ p) per example: analytic if ``mode`` allows and torch knows it, else log q(z) − log p(z)."""
    if mode != "mc":
        try:
            return kl_divergence(q, p)
        except NotImplementedError:
            if mode == "analytic":
                raise
    return q.log_prob(z) - p.log_prob(z)


class ELBO(Loss):
    """Negative ELBO averaged over the batch (and over ``samples`` draws of z)."""

    terms = ("loss",)

    def __init__(self, encoder: nn.Module, decoder: nn.Module, prior: nn.Module, beta: float, kl: str, samples: int) -> None:
        super().__init__()
        self.encoder, self.decoder, self.prior = encoder, decoder, prior
        self.beta, self.kl, self.samples = beta, kl, samples

    def forward(self, inputs: Mapping[str, Any], terms: frozenset[str]) -> dict[str, Tensor]:
        x = inputs["x"]
        q = self.encoder(x)
        z = q.rsample((self.samples,))
        reconstruction = self.decoder(z).log_prob(x).mean(0)
        kl = kl_term(q, self.prior(), z, self.kl)
        kl = kl.mean(0) if kl.dim() > reconstruction.dim() else kl
        elbo = reconstruction - kl
        return {
            "loss": -(reconstruction - self.beta * kl).mean(),
            "elbo": elbo.mean().detach(),
            "kl": kl.mean().detach(),
            "reconstruction": reconstruction.mean().detach(),
        }


class ELBOParams(Params):
    encoder: Ref("encoder")  # type: ignore[valid-type]
    decoder: Ref("decoder")  # type: ignore[valid-type]
    prior: Ref("prior", "flow")  # type: ignore[valid-type]
    x: Value = "x"
    beta: float = Field(1.0, ge=0.0, description="weight of the KL term in the loss (β-VAE)")
    kl: Literal["auto", "analytic", "mc"] = "auto"
    samples: int = Field(1, gt=0, description="draws of z per example")


def build_elbo(p: ELBOParams, ctx: BuildContext) -> ELBO:
    """Negative evidence lower bound, with analytic or Monte Carlo KL and β."""
    return ELBO(ctx.component(p.encoder), ctx.component(p.decoder), ctx.component(p.prior), p.beta, p.kl, p.samples)
