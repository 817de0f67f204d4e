"""Flow posteriors: the ELBO counts the flow's log-determinant; sampling and density directions agree."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Independent, Normal

import compose_gen_plugins.latent as latent_plugin
from compose_gen import Chain, make_catalogue
from compose_gen.testing.bijectors import check_type
from compose_gen_plugins.distributions import StandardNormal
from compose_gen_plugins.flows.autoregressive import AutoregressiveParams, build_iaf
from compose_gen_plugins.flows.planar import Planar
from compose_gen_plugins.latent.conditionals import BernoulliDecoder
from compose_gen_plugins.latent.elbo import VAE
from compose_gen_plugins.latent.flow_posterior import AmortizedPlanar, FlowEncoder
from compose_gen_plugins.latent.model import ObjectiveParams
from compose_gen_plugins.networks import MLP

LATENT, CONTEXT, X_DIM = 3, 2, 4
DTYPE = torch.float64


def u_hat(u: Tensor, w: Tensor) -> Tensor:
    """Rezende & Mohamed (2015), appendix A.1: û = u + (m(wᵀu) − wᵀu) w/‖w‖², m(a) = −1 + softplus(a)."""
    w_dot_u = (w * u).sum(-1, keepdim=True)
    return u + (-1 + F.softplus(w_dot_u) - w_dot_u) * w / w.square().sum(-1, keepdim=True)


def hand_planar(z0: Tensor, u: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """z = z0 + û tanh(wᵀz0 + b) and log|det ∂z/∂z0| = log|1 + (1 − tanh²(wᵀz0 + b)) wᵀû|."""
    uh = u_hat(u, w)
    activation = (w * z0).sum(-1) + b
    z = z0 + uh * torch.tanh(activation)[..., None]
    log_det = torch.log((1 + (1 - torch.tanh(activation) ** 2) * (w * uh).sum(-1)).abs())
    return z, log_det


def vae_with(transform: nn.Module, context: int) -> VAE:
    torch.manual_seed(0)
    encoder = FlowEncoder(MLP(X_DIM, 2 * LATENT + context, [8]), LATENT, context, Chain([transform]))
    decoder = BernoulliDecoder(MLP(LATENT, X_DIM, [8]), (X_DIM,))
    return VAE(encoder, decoder, StandardNormal((LATENT,)), ObjectiveParams()).to(DTYPE)


def hand_evidence(model: VAE, x: Tensor, k: int, seed: int, planar_params) -> tuple[Tensor, Tensor]:  # type: ignore[no-untyped-def]
    q = model.encoder(x)
    torch.manual_seed(seed)
    z0 = q.base.rsample((k,))
    u, w, b = planar_params(q)
    z, log_det = hand_planar(z0, u, w, b)
    log_q = q.base.log_prob(z0) - log_det
    log_p = Independent(Normal(torch.zeros(LATENT, dtype=DTYPE), 1.0), 1).log_prob(z)
    return model.decoder(z).log_prob(x), log_q - log_p


@torch.no_grad()
def test_elbo_of_a_planar_posterior_counts_the_log_determinant() -> None:
    planar = Planar((LATENT,))
    nn.init.normal_(planar.u), nn.init.normal_(planar.w), nn.init.constant_(planar.b, 0.3)
    model = vae_with(planar, 0)
    x = (torch.rand(5, X_DIM, generator=torch.Generator().manual_seed(1)) > 0.5).to(DTYPE)
    torch.manual_seed(7)
    evidence = model.evidence(x, 4, exact_kl=True)  # no closed form: falls back to Monte Carlo
    assert not evidence.exact_kl
    log_lik, kl = hand_evidence(model, x, 4, 7, lambda q: (planar.u, planar.w, planar.b))
    torch.testing.assert_close(evidence.log_likelihood, log_lik)
    torch.testing.assert_close(evidence.kl, kl)
    torch.manual_seed(7)
    out = model({"x": x}, frozenset({"loss"}))
    log_lik, kl = hand_evidence(model, x, 1, 7, lambda q: (planar.u, planar.w, planar.b))
    torch.testing.assert_close(out["loss"], -(log_lik - kl).mean())


@torch.no_grad()
def test_amortized_planar_takes_its_parameters_from_the_encoder_context() -> None:
    flow = AmortizedPlanar(LATENT, CONTEXT)
    model = vae_with(flow, CONTEXT)
    x = torch.rand(5, X_DIM, generator=torch.Generator().manual_seed(2)).to(DTYPE)

    def amortized(q):  # type: ignore[no-untyped-def]
        u, w, b = flow.hyper(q.context).split([LATENT, LATENT, 1], -1)
        return u, w, b.squeeze(-1)

    torch.manual_seed(3)
    evidence = model.evidence(x, 6, exact_kl=False)
    log_lik, kl = hand_evidence(model, x, 6, 3, amortized)
    torch.testing.assert_close(evidence.log_likelihood, log_lik)
    torch.testing.assert_close(evidence.kl, kl)


@pytest.mark.parametrize(
    "make, context",
    [
        (lambda: AmortizedPlanar(LATENT, CONTEXT), CONTEXT),
        (lambda: build_iaf(AutoregressiveParams(shape=[LATENT], hidden=[8], context_features=CONTEXT), None), CONTEXT),
        (lambda: Planar((LATENT,)), 0),
    ],
)
@torch.no_grad()
def test_density_direction_agrees_with_the_log_density_of_own_samples(make, context: int) -> None:  # type: ignore[no-untyped-def]
    model = vae_with(make(), context)
    for p in model.parameters():
        p.add_(0.3 * torch.randn_like(p))
    q = model.encoder(torch.rand(4, X_DIM, dtype=DTYPE))
    z, log_q = q.rsample_with_log_prob((5,))
    assert z.shape == (5, 4, LATENT)
    torch.testing.assert_close(q.log_prob(z), log_q, atol=1e-8, rtol=1e-8)
    assert q.location.shape == (4, LATENT)


def test_amortized_planar_passes_the_bijector_conformance_kit() -> None:
    check_type(make_catalogue([latent_plugin], entry_points=False), "amortized_planar", max_examples=4)


def test_flow_encoder_checks_shapes_when_built() -> None:
    from compose_gen_plugins.latent.flow_posterior import FlowEncoderParams, build_flow_encoder

    class Ctx:
        data = None
        built = {
            "net": MLP(X_DIM, 2 * LATENT + CONTEXT, [8]),
            "good": AmortizedPlanar(LATENT, CONTEXT),
            "wrong": AmortizedPlanar(LATENT, 3),
        }

        def component(self, ref: str) -> nn.Module:
            return self.built[ref]

    params = FlowEncoderParams(net="net", latent=LATENT, context_features=CONTEXT, bijectors=["good", "wrong"])
    with pytest.raises(ValueError, match=r"bijectors\[1\] expects a context of shape \(3,\)"):
        build_flow_encoder(params, Ctx())
    encoder = build_flow_encoder(params.model_copy(update={"bijectors": ["good"]}), Ctx())
    assert encoder(torch.rand(2, X_DIM)).rsample((3,)).shape == (3, 2, LATENT)


def test_a_flow_encoder_network_of_the_wrong_output_size_is_told_the_size_it_needs() -> None:
    encoder = FlowEncoder(nn.Linear(X_DIM, 2 * LATENT), LATENT, CONTEXT, Chain([AmortizedPlanar(LATENT, CONTEXT)]))
    with pytest.raises(ValueError, match=(
        r"^the network gives 6 numbers per example, this encoder needs 2·latent \+ context_features = 8 "
        r"\(μ and σ of each of the 3 latents, then the 2 context features of its flow\)$"
    )):
        encoder(torch.zeros(5, X_DIM))


def test_a_flow_encoder_whose_bijectors_take_no_context_refuses_context_features() -> None:
    """context_features: 16 with IAF layers lacking their own context_features validated: the encoder computed h(x) and
    dropped it, so the posterior's flow was the same for every x (not amortised), silently."""
    from compose_gen_plugins.latent.flow_posterior import FlowEncoderParams, build_flow_encoder

    class Ctx:
        data = None
        built = {"net": MLP(X_DIM, 2 * LATENT + CONTEXT, [8]), "plain": Planar((LATENT,)), "amortized": AmortizedPlanar(LATENT, CONTEXT)}

        def component(self, ref: str) -> nn.Module:
            return self.built[ref]

    params = FlowEncoderParams(net="net", latent=LATENT, context_features=CONTEXT, bijectors=["plain"])
    with pytest.raises(ValueError, match=r"context_features is 2, but none of the bijectors takes a context"):
        build_flow_encoder(params, Ctx())
    build_flow_encoder(params.model_copy(update={"bijectors": ["plain", "amortized"]}), Ctx())  # one that reads h(x) suffices
    build_flow_encoder(params.model_copy(update={"context_features": 0}), Ctx())
