"""Two-level hierarchical VAE: precision-weighted posterior, exact and Monte Carlo bounds, sampling, a context."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal

from compose_gen_plugins.distributions import StandardNormal
from compose_gen_plugins.latent.conditionals import BernoulliDecoder, GaussianEncoder
from compose_gen_plugins.latent.hierarchical import HierarchicalVAE, precision_weighted
from compose_gen_plugins.latent.model import ObjectiveParams
from compose_gen_plugins.networks import MLP

X_DIM, TOP, BOTTOM = 6, 2, 3
DTYPE = torch.float64


def gaussian(loc: torch.Tensor, scale: torch.Tensor) -> Independent:
    return Independent(Normal(loc, scale), 1)


def test_precision_weighting_is_the_normalised_product_of_the_two_gaussians() -> None:
    g = torch.Generator().manual_seed(0)
    a = gaussian(torch.randn(4, 3, generator=g, dtype=DTYPE), torch.rand(4, 3, generator=g, dtype=DTYPE) + 0.2)
    b = gaussian(torch.randn(2, 4, 3, generator=g, dtype=DTYPE), torch.rand(2, 4, 3, generator=g, dtype=DTYPE) + 0.2)
    merged = precision_weighted(a, b)
    assert merged.batch_shape == (2, 4)
    # log a(z) + log b(z) − log merged(z) does not depend on z when merged ∝ a·b.
    z = torch.randn(5, 2, 4, 3, generator=g, dtype=DTYPE)
    difference = a.log_prob(z) + b.log_prob(z) - merged.log_prob(z)
    torch.testing.assert_close(difference, difference[:1].expand_as(difference))


def test_levels_of_different_sizes_are_named() -> None:
    """The two z₁ sizes met first in a broadcast, whose 'size of tensor a (16) must match b (8)' named neither part."""
    a, b = gaussian(torch.zeros(4, 16), torch.ones(4, 16)), gaussian(torch.zeros(4, 8), torch.ones(4, 8))
    with pytest.raises(ValueError, match=r"encoder_bottom gives z₁ of 16 values, conditional_prior of 8: make their latent sizes agree"):
        precision_weighted(a, b)
    with pytest.raises(ValueError, match=r"z₁ of 16 values, conditional_prior of 8"):
        precision_weighted(a.base_dist, b.base_dist)
    precision_weighted(a.base_dist, gaussian(torch.zeros(4, 16), torch.ones(4, 16)))  # elementwise beside Independent, as before


def hvae(context_features: int = 0, **objective: object) -> HierarchicalVAE:
    torch.manual_seed(0)
    return HierarchicalVAE(
        GaussianEncoder(MLP(X_DIM, 2 * TOP, [8], context_features=context_features), TOP),
        GaussianEncoder(MLP(X_DIM, 2 * BOTTOM, [8], context_features=context_features), BOTTOM),
        GaussianEncoder(MLP(TOP, 2 * BOTTOM, [8], context_features=context_features), BOTTOM),
        StandardNormal((TOP,)),
        BernoulliDecoder(MLP(BOTTOM, X_DIM, [8], context_features=context_features), (X_DIM,)),
        ObjectiveParams(**({"context": "c"} if context_features else {}), **objective),
    ).to(DTYPE)


@torch.no_grad()
def test_exact_kl_and_monte_carlo_bounds_agree_in_expectation() -> None:
    model = hvae()
    x = (torch.rand(3, X_DIM, generator=torch.Generator().manual_seed(1)) > 0.5).to(DTYPE)
    draws = 40000
    torch.manual_seed(0)
    exact = model.evidence(x, draws, exact_kl=True)
    monte_carlo = model.evidence(x, draws, exact_kl=False)
    assert exact.exact_kl and not monte_carlo.exact_kl
    assert exact.kl.shape == (draws, 3)  # KL(q(z1|x,z2) ‖ p(z1|z2)) depends on each z2 draw
    a, b = exact.log_likelihood - exact.kl, monte_carlo.log_weights
    error = torch.sqrt(a.var(0) / draws + b.var(0) / draws)
    assert ((a.mean(0) - b.mean(0)).abs() <= 4 * error).all()


@torch.no_grad()
def test_levels_sampling_and_reconstruction_shapes() -> None:
    model = hvae(warmup_steps=10)
    x = torch.ones(4, X_DIM, dtype=DTYPE)
    levels = model.levels(x)
    assert [level.name for level in levels] == ["z2", "z1"]
    assert levels[1].posterior.batch_shape == (4,) and levels[1].posterior.event_shape == (BOTTOM,)
    assert model.sample(5, temperature=0.5).shape == (5, X_DIM)
    assert model.reconstruct(x).shape == x.shape
    out = model({"x": x}, frozenset({"loss"}))
    assert float(out["kl_weight"]) == 0.0 and math.isclose(float(out["loss"]), -float(out["reconstruction"]))


@torch.no_grad()
def test_an_encoding_holds_both_levels_and_decodes_to_the_reconstruction() -> None:
    """encode(x) = (μ_q(z₂), (μ_q(z₁) − μ_p)/σ_p): decoding it gives p(x|z₁)'s mean at z₁'s posterior mean, so an
    interpolation's ends are reconstructions; a zero offset decodes z₂ through the top-down prior's mean."""
    model = hvae()
    x = (torch.rand(4, X_DIM, generator=torch.Generator().manual_seed(1)) > 0.5).to(DTYPE)
    top, bottom = model.levels(x)
    z = model.encode(x)
    assert z.shape == (4, TOP + BOTTOM)
    torch.testing.assert_close(z[:, :TOP], top.posterior.mean)
    torch.testing.assert_close(model.decode(z), model.decoder(bottom.posterior.mean).mean)
    torch.testing.assert_close(model.reconstruct(x), model.decoder(bottom.posterior.mean).mean)
    z[:, TOP:] = 0
    torch.testing.assert_close(model.decode(z), model.decoder(model.conditional_prior(top.posterior.mean).mean).mean)


NETWORKS = ("encoder_top", "encoder_bottom", "conditional_prior", "decoder")


@torch.no_grad()
def test_with_a_context_every_network_reads_it() -> None:
    """q(z2|x,c), q(z1|x,c), p(z1|z2,c) and p(x|z1,c): each network is called with the context (Sohn et al. 2015)."""
    model = hvae(context_features=2, objective="iwae", samples=3)
    x = (torch.rand(4, X_DIM, generator=torch.Generator().manual_seed(1)) > 0.5).to(DTYPE)
    context = torch.randn(4, 2, generator=torch.Generator().manual_seed(2))  # float32: cast to the networks' dtype
    seen: dict[str, list] = {name: [] for name in NETWORKS}
    handles = [getattr(model, name).net.register_forward_hook(lambda module, args, out, name=name: seen[name].append(args)) for name in NETWORKS]

    def calls() -> dict[str, int]:
        """How many calls each network got since the last look, each asserted to carry the context."""
        counts = {}
        for name, recorded in seen.items():
            assert all(len(args) == 2 and args[1] is context for args in recorded), name
            counts[name] = len(recorded)
            recorded.clear()
        return counts

    evidence = model.evidence(x, 3, exact_kl=True, context=context)
    assert evidence.log_likelihood.shape == (3, 4) and evidence.kl.shape == (3, 4)
    assert calls() == dict.fromkeys(NETWORKS, 1)
    assert model.sample(4, temperature=0.5, context=context).shape == (4, X_DIM)
    assert calls() == {"encoder_top": 0, "encoder_bottom": 0, "conditional_prior": 1, "decoder": 1}
    levels = model.levels(x, context)
    assert [level.posterior.batch_shape for level in levels] == [(4,), (4,)]
    assert calls() == {"encoder_top": 1, "encoder_bottom": 1, "conditional_prior": 1, "decoder": 0}
    assert model.reconstruct(x, context).shape == x.shape  # encode (both encoders, the conditional prior), then decode
    assert calls() == {"encoder_top": 1, "encoder_bottom": 1, "conditional_prior": 2, "decoder": 1}
    out = model({"x": x, "context": context}, frozenset({"loss"}))
    assert calls() == dict.fromkeys(NETWORKS, 1) and torch.isfinite(out["loss"])
    for handle in handles:
        handle.remove()
    torch.manual_seed(5)
    a = model.evidence(x, 2, exact_kl=False, context=context).log_weights
    torch.manual_seed(5)
    b = model.evidence(x, 2, exact_kl=False, context=context + 1).log_weights
    assert not torch.allclose(a, b), "the bound depends on the context"


def test_sampling_at_temperature_zero_decodes_the_modes_of_both_levels() -> None:
    """z₂ at the top prior's mode 0, z₁ at the mean of p(z₁|z₂ = 0): every draw is the same; above 0 they differ."""
    model = hvae()
    cold, warm = model.sample(5, temperature=0.0), model.sample(5, temperature=1.0)
    torch.testing.assert_close(cold, cold[:1].expand_as(cold))
    p_bottom = model.conditional_prior(torch.zeros(1, TOP, dtype=DTYPE))
    torch.testing.assert_close(cold[:1], model.decoder(p_bottom.base_dist.loc).mean)
    assert not torch.allclose(warm, warm[:1].expand_as(warm))
