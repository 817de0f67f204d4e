r"""The variational autoencoder and its bounds (Kingma & Welling 2014; Rezende et al. 2014).

.. math:: \log p(x) \ge \mathbb{E}_{q(z|x)}[\log p(x|z)] - \mathrm{KL}(q(z|x) \,\|\, p(z)) = \mathrm{ELBO}(x)

One model, an encoder q(z|x), a decoder p(x|z) and a prior p(z) (a ``prior`` or
any ``flow``), trained with either bound of :mod:`.model`:

* ``elbo`` — analytic KL when ``torch.distributions`` knows the pair (``kl: auto``
  falls back to Monte Carlo otherwise), β and KL warm-up;
* ``iwae`` — the k-sample importance-weighted bound (Burda et al. 2016).

With a ``context`` c it is the conditional VAE (Sohn et al. 2015):
:math:`\log p(x|c) \ge \mathbb{E}_{q(z|x,c)}[\log p(x|z,c)] - \mathrm{KL}(q(z|x,c)\,\|\,p(z|c))`.
A flow posterior (``flow_encoder``) plugs in unchanged: its draws carry their
own log-density, which counts the flow's log-determinant.  An optional
``transform`` f (a bijector) makes the decoder model y = f(x) instead of x, the
hybrid VAE-flow of :mod:`.hybrid`.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor, nn

from compose_gen import Bijector, BuildContext, ComponentType, Ref, hookimpl, repeat_for_draws
from compose_gen_plugins.latent.model import (
    caution_unbounded,
    decoded_log_prob,
    in_data_space,
    Evidence,
    LatentLevel,
    LatentVariableModel,
    ObjectiveParams,
    draw,
    kl_or_estimate,
    location,
    prior_given,
    sample_prior,
)

__all__ = ["VAE", "VAEParams", "build_elbo"]


class VAE(LatentVariableModel):
    """Encoder q(z|x), decoder p(x|z) (or p(f(x)|z)), prior p(z); the bound is chosen by :class:`ObjectiveParams`."""

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        prior: nn.Module,
        objective: ObjectiveParams,
        transform: Bijector | None = None,
    ) -> None:
        super().__init__(objective, {"encoder": encoder, "decoder": decoder, "prior": prior, "bijectors": transform})
        self.encoder, self.decoder, self.prior, self.transform = encoder, decoder, prior, transform
        self.discrete = getattr(decoder, "discrete", False) and transform is None
        #: Whether the transform draws noise (dequantization), so that each draw of z needs its own: looked up once, not per step.
        self.transform_draws_noise = transform is not None and transform.draws_noise

    def evidence(self, x: Tensor, k: int, exact_kl: bool, context: Tensor | None = None) -> Evidence:
        q = self.call_part("encoder", x, context)
        z, log_q = draw(q, k, with_log_prob=not exact_kl)
        px = self.call_part("decoder", z, context)
        if self.transform is None:
            log_likelihood = decoded_log_prob(px, x)
        else:
            y, ladj = self._transformed(x, len(z), context)
            log_likelihood = decoded_log_prob(px, y) + ladj
        kl, exact = kl_or_estimate(q, prior_given(self.prior, self.given("prior", context)), z, log_q, exact_kl)
        return Evidence(log_likelihood, kl, exact)

    def _transformed(self, x: Tensor, k: int, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """y = f(x) and ln|det ∂f/∂x|; for a transform that draws noise (dequantization u), once per each of the ``k``
        draws of z, so that each importance weight is of an independent pair (u, z) and the k-draw estimate of
        ln p(x) = ln E_{u,z}[p(f(x, u)|z) p(z) / q(z|x)] + ln|det| tightens as k grows, however the draws are chunked."""
        c = self.given("bijectors", context)
        if not self.transform_draws_noise:
            return self.transform(x, c)
        y, ladj = self.transform(repeat_for_draws(x, k), None if c is None else repeat_for_draws(c, k))
        return y.unflatten(0, (k, len(x))), ladj.unflatten(0, (k, len(x)))

    def _to_data(self, y: Tensor, context: Tensor | None) -> Tensor:
        return y if self.transform is None else self.transform.inverse(y, self.given("bijectors", context))[0]

    def sample(self, n: int, temperature: float = 1.0, mean: bool = True, context: Tensor | None = None) -> Tensor:
        z = sample_prior(self.prior, n, self.given("prior", context), temperature)
        px = self.call_part("decoder", z, context)
        return self._to_data(px.mean if mean else px.sample(), context)

    def encode(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return location(self.call_part("encoder", x, context))

    def decode(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        return self._to_data(self.call_part("decoder", z, context).mean, context)

    def levels(self, x: Tensor, context: Tensor | None = None) -> list[LatentLevel]:
        q = self.call_part("encoder", x, context)
        return [LatentLevel("z", q, prior_given(self.prior, self.given("prior", context)))]


class VAEParams(ObjectiveParams):
    parts = ("encoder", "decoder", "prior")

    encoder: Ref("encoder") = Field(..., description="encoder q(z|x)")  # type: ignore[valid-type]
    decoder: Ref("decoder") = Field(..., description="decoder p(x|z)")  # type: ignore[valid-type]
    prior: Ref("prior", "flow") = Field(..., description="prior p(z): a prior or a flow")  # type: ignore[valid-type]


def build_elbo(p: VAEParams, ctx: BuildContext) -> VAE:
    """Negative ELBO of a VAE, with analytic or Monte Carlo KL, β and KL warm-up.

    log p(x) ≥ ELBO(x) = E_q(z|x)[log p(x|z)] − KL(q(z|x) ‖ p(z)); trained, averaged over the batch:
    loss = −(1/k) Σᵢ log p(x|zᵢ) + β_t · KL,  zᵢ ~ q(z|x) reparameterised, i = 1..k (k = samples, default 1).

    KL is the closed form when torch.distributions knows the pair of posterior and prior (kl: auto or analytic),
    else the estimate (1/k) Σᵢ [log q(zᵢ|x) − log p(zᵢ)] (kl: mc, or auto without a closed form).
    β_t = β · min(1, t/T) after t optimizer steps, T = warmup_steps (β_t = β when T = 0); β ≠ 1 is the β-VAE.
    The logged elbo is the bound itself, weight 1 (``objective: iwae`` trains iwae's bound instead).  With a
    context c, each part that reads it (``conditioned``; by default the encoder, the decoder and a conditional flow
    prior) is conditioned: q(z|x, c), p(x|z, c), p(z|c), the conditional VAE of Sohn et al. 2015.

    Kingma & Welling 2014, "Auto-Encoding Variational Bayes"; β: Higgins et al. 2017, "β-VAE: Learning Basic Visual
    Concepts with a Constrained Variational Framework"; warm-up: Bowman et al. 2016, "Generating Sentences from a
    Continuous Space", and Sønderby et al. 2016, "Ladder Variational Autoencoders".
    """
    caution_unbounded(p.x, ctx.component(p.decoder), ctx)
    return in_data_space(VAE(ctx.component(p.encoder), ctx.component(p.decoder), ctx.component(p.prior), p), p, ctx)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [ComponentType("elbo", "loss", VAEParams, build_elbo)]
