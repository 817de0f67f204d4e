"""Hybrid VAE-flow (Lucas et al. 2019): the bound equals E_q[ln p(f(x)|z)] − KL + ln|det ∂f/∂x| on a tiny case."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import Tensor
from torch.distributions import Independent, Normal

import compose_gen as cg
from compose_gen import Bijector, Chain
from compose_gen_plugins.distributions import StandardNormal
from compose_gen_plugins.flows.dequantize import UniformDequantization
from compose_gen_plugins.latent.conditionals import GaussianDecoder, GaussianEncoder
from compose_gen_plugins.latent.elbo import VAE
from compose_gen_plugins.latent.model import ObjectiveParams
from compose_gen_plugins.networks import MLP

X_DIM, LATENT = 3, 2
DTYPE = torch.float64
LEVELS = 4
SCALE = torch.tensor([2.0, 0.5, -3.0], dtype=DTYPE)
SHIFT = torch.tensor([0.1, -1.0, 0.4], dtype=DTYPE)


class Affine(Bijector):
    """f(x) = a ⊙ x + c, log|det ∂f/∂x| = Σ log|a_i|."""

    def __init__(self) -> None:
        super().__init__((X_DIM,))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return SCALE * x + SHIFT, SCALE.abs().log().sum().expand(x.shape[:-1])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return (y - SHIFT) / SCALE, -SCALE.abs().log().sum().expand(y.shape[:-1])


def hybrid(objective: ObjectiveParams) -> VAE:
    torch.manual_seed(0)
    encoder = GaussianEncoder(MLP(X_DIM, 2 * LATENT, [8]), LATENT)
    decoder = GaussianDecoder(MLP(LATENT, X_DIM, [8]), (X_DIM,), 1, "learned", 0.7)
    return VAE(encoder, decoder, StandardNormal((LATENT,)), objective, Chain([Affine()])).to(DTYPE)


@torch.no_grad()
def test_hybrid_bound_equals_its_formula() -> None:
    model = hybrid(ObjectiveParams())
    x = torch.randn(4, X_DIM, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    q = model.encoder(x)
    torch.manual_seed(2)
    z = q.rsample((3,))
    y = SCALE * x + SHIFT
    expected_log_lik = model.decoder(z).log_prob(y) + SCALE.abs().log().sum()
    kl = torch.distributions.kl_divergence(q, Independent(Normal(torch.zeros(LATENT, dtype=DTYPE), 1.0), 1))
    torch.manual_seed(2)
    evidence = model.evidence(x, 3, exact_kl=True)
    torch.testing.assert_close(evidence.log_likelihood, expected_log_lik)
    torch.testing.assert_close(evidence.kl, kl)
    torch.manual_seed(2)
    monte_carlo = model.evidence(x, 3, exact_kl=False)
    prior = Independent(Normal(torch.zeros(LATENT, dtype=DTYPE), 1.0), 1)
    torch.testing.assert_close(monte_carlo.log_weights, expected_log_lik + prior.log_prob(z) - q.log_prob(z))
    assert not model.discrete  # a density in x: the evaluation adds the data's log-determinant


@torch.no_grad()
def test_hybrid_samples_and_reconstructions_go_back_through_the_flow() -> None:
    model = hybrid(ObjectiveParams(objective="iwae", samples=4))
    torch.manual_seed(3)
    z = model.prior().sample((5,))
    torch.manual_seed(3)
    torch.testing.assert_close(model.sample(5), (model.decoder(z).mean - SHIFT) / SCALE)
    x = torch.randn(2, X_DIM, dtype=DTYPE)
    torch.testing.assert_close(model.reconstruct(x), (model.decoder(model.encoder(x).mean).mean - SHIFT) / SCALE)


@torch.no_grad()
def test_a_dequantizing_flow_draws_its_noise_afresh_for_each_importance_draw() -> None:
    """Each weight is of its own pair (u, z), so the k-draw estimate tightens with k whatever the chunks (Burda et al. 2016)."""
    torch.manual_seed(0)
    encoder = GaussianEncoder(MLP(X_DIM, 2 * LATENT, [8]), LATENT)
    decoder = GaussianDecoder(MLP(LATENT, X_DIM, [8]), (X_DIM,), 1, "learned", 0.7)
    model = VAE(encoder, decoder, StandardNormal((LATENT,)), ObjectiveParams(), Chain([UniformDequantization((X_DIM,), LEVELS)]))
    x = torch.randint(0, LEVELS, (4, X_DIM)) / LEVELS
    torch.manual_seed(2)
    evidence = model.evidence(x, 3, exact_kl=False)
    torch.manual_seed(2)
    q = model.encoder(x)
    z = q.rsample((3,))
    y = (x * LEVELS + torch.rand(3, *x.shape)) / LEVELS  # one noise draw per (draw, example), in the transform's order
    expected = model.decoder(z).log_prob(y) + StandardNormal((LATENT,))().log_prob(z) - q.log_prob(z)
    torch.testing.assert_close(evidence.log_weights, expected)
    assert not torch.allclose(evidence.log_weights[0], evidence.log_weights[1])


def test_ancestral_sampling_of_a_hybrid_s_decoder_is_refused() -> None:
    """Its draws are y = f(x): ancestral gave them as data, 70 times farther from it (FD) than the loss's own samples."""
    spec = yaml.safe_load((Path(__file__).resolve().parents[3] / "specs" / "hybrid_vae_flow_digits.yaml").read_text())
    spec["sample"] = {"type": "ancestral", "prior": "prior", "decoder": "decoder"}
    with pytest.raises(cg.SpecError, match=r"sample: type 'ancestral' .* decoder 'decoder' models y = f\(x\) of the hybrid_vae_flow loss .*"
                       r"sample: \{type: latent_model, model: LOSS\}"):
        cg.build(cg.load_spec(spec))
