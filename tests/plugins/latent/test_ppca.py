"""The ELBO/IWAE family on probabilistic PCA, where log p(x) is known in closed form.

Model (Tipping & Bishop 1999): z ~ N(0, I_d), x | z ~ N(Wz + μ, σ²I_D), so
x ~ N(μ, WWᵀ + σ²I) and the exact posterior is N(M⁻¹Wᵀ(x − μ), σ²M⁻¹), M = WᵀW + σ²I.
The encoder is the library's diagonal Gaussian encoder set to the exact posterior
mean and the square roots of the posterior variances, optionally widened and
shifted: exact when M is diagonal and nothing is perturbed, otherwise an
approximation with a strictly positive KL gap.  Its conditional version checks the
conditional VAE's bounds on log p(x|c).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal

from compose_gen_plugins.distributions import StandardNormal
from compose_gen_plugins.latent.conditionals import MIN_SCALE, GaussianDecoder, GaussianEncoder
from compose_gen_plugins.latent.elbo import VAE
from compose_gen_plugins.latent.model import ObjectiveParams
from compose_gen_plugins.networks import MLP

D, LATENT, SIGMA = 5, 2, 0.6
DTYPE = torch.float64


def ppca(weight: Tensor, shift: Tensor, widen: float = 1.0, offset: float = 0.0) -> tuple[VAE, MultivariateNormal]:
    """The VAE whose decoder is the PPCA likelihood and whose encoder a (perturbed) mean-field posterior; and p(x)."""
    decoder_net = nn.Linear(LATENT, D).to(DTYPE)
    encoder_net = nn.Linear(D, 2 * LATENT).to(DTYPE)
    m = weight.T @ weight + SIGMA**2 * torch.eye(LATENT, dtype=DTYPE)
    gain = torch.linalg.solve(m, weight.T)  # posterior mean = gain (x − μ)
    std = widen * (SIGMA**2 * torch.linalg.inv(m).diagonal()).sqrt()
    with torch.no_grad():
        decoder_net.weight.copy_(weight)
        decoder_net.bias.copy_(shift)
        encoder_net.weight.zero_()
        encoder_net.weight[:LATENT] = gain
        encoder_net.bias[:LATENT] = offset - gain @ shift
        encoder_net.bias[LATENT:] = torch.log(torch.expm1(std - MIN_SCALE))  # softplus⁻¹
    decoder = GaussianDecoder(decoder_net, (D,), 1, "fixed", SIGMA).to(DTYPE)
    prior = StandardNormal((LATENT,)).to(DTYPE)
    model = VAE(GaussianEncoder(encoder_net, LATENT), decoder, prior, ObjectiveParams())
    marginal = MultivariateNormal(shift, weight @ weight.T + SIGMA**2 * torch.eye(D, dtype=DTYPE))
    return model, marginal


def points(marginal: MultivariateNormal, n: int, seed: int) -> Tensor:
    torch.manual_seed(seed)
    return marginal.sample((n,))


def iwae_estimates(model: VAE, x: Tensor, k: int, repeats: int) -> Tensor:
    """``repeats`` independent IWAE_k values per point, shape ``(repeats, n)``."""
    log_w = model.evidence(x.expand(repeats, *x.shape), k, exact_kl=False).log_weights
    return torch.logsumexp(log_w, 0) - math.log(k)


def random_weight(seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(D, LATENT, generator=g, dtype=DTYPE), torch.randn(D, generator=g, dtype=DTYPE)


def test_exact_posterior_makes_every_importance_weight_equal_to_p_x() -> None:
    # Orthogonal columns make M diagonal, so the mean-field posterior is exact and w_i = p(x) for every draw.
    q, _ = torch.linalg.qr(torch.randn(D, LATENT, dtype=DTYPE, generator=torch.Generator().manual_seed(1)))
    weight = q * torch.tensor([2.0, 0.7], dtype=DTYPE)
    model, marginal = ppca(weight, torch.randn(D, dtype=DTYPE))
    x = points(marginal, 4, seed=2)
    log_w = model.evidence(x, 7, exact_kl=False).log_weights
    torch.testing.assert_close(log_w, marginal.log_prob(x).expand(7, 4), atol=1e-10, rtol=0)
    draws = 20000
    exact = model.evidence(x, draws, exact_kl=True)  # the ELBO is then log p(x) too
    estimate = exact.log_likelihood - exact.kl
    error = estimate.std(0) / math.sqrt(draws)
    assert ((estimate.mean(0) - marginal.log_prob(x)).abs() <= 4 * error).all()


@torch.no_grad()
def test_elbo_below_iwae_k_increasing_in_k_below_log_p_and_converging() -> None:
    model, marginal = ppca(*random_weight(0), widen=1.6, offset=0.3)
    x = points(marginal, 3, seed=3)
    log_p = marginal.log_prob(x)
    torch.manual_seed(4)
    exact = model.evidence(x, 20000, exact_kl=True)
    elbo = exact.log_likelihood.mean(0) - exact.kl
    assert ((log_p - elbo) > 0.05).all(), "the mean-field posterior should leave a clear gap"

    repeats = 2000
    means, errors = [], []
    ks = [1, 2, 3, 4, 5, 16, 64, 256]
    for k in ks:
        values = iwae_estimates(model, x, k, repeats)
        means.append(values.mean(0))
        errors.append(values.std(0) / math.sqrt(repeats))
    for i, k in enumerate(ks):
        # Every bound holds in expectation; allow 4 standard errors of the estimates compared.
        assert (elbo - means[i] <= 4 * errors[i] + 2e-3).all(), f"ELBO > IWAE_{k}"
        assert (means[i] - log_p <= 4 * errors[i]).all(), f"IWAE_{k} > log p(x)"
        if i + 1 < len(ks):
            slack = 4 * torch.sqrt(errors[i] ** 2 + errors[i + 1] ** 2)
            assert (means[i] - means[i + 1] <= slack).all(), f"IWAE_{k} > IWAE_{ks[i + 1]}"
    gaps = [log_p - m for m in means]
    torch.testing.assert_close(means[0], elbo, atol=float(4 * errors[0].max()) + 2e-3, rtol=0)  # IWAE_1 is the ELBO
    assert (gaps[-1] < 0.01 * gaps[0]).all(), f"IWAE_k does not approach log p(x): gaps {gaps[0]} -> {gaps[-1]}"
    assert (gaps[-1].abs() < 0.02).all()


@pytest.mark.parametrize("seed", [0, 5])
@torch.no_grad()
def test_analytic_and_monte_carlo_kl_elbo_agree_with_the_closed_form(seed: int) -> None:
    weight, shift = random_weight(seed)
    model, marginal = ppca(weight, shift, widen=1.6, offset=0.3)
    x = points(marginal, 3, seed=seed + 1)
    q = model.encoder(x)
    mean, var = q.mean, q.variance
    # Closed-form ELBO of a linear-Gaussian model: E_q log N(x; Wz + μ, σ²I) − KL(N(m, S) ‖ N(0, I)).
    residual = (x - mean @ weight.T - shift).square().sum(-1) + (weight.square() @ var.T).sum(0)
    expected_log_lik = -0.5 * D * math.log(2 * math.pi * SIGMA**2) - residual / (2 * SIGMA**2)
    kl = 0.5 * (var + mean.square() - 1 - var.log()).sum(-1)
    closed_form = expected_log_lik - kl

    draws = 50000
    torch.manual_seed(seed)
    analytic = model.evidence(x, draws, exact_kl=True)
    monte_carlo = model.evidence(x, draws, exact_kl=False)
    assert analytic.exact_kl and not monte_carlo.exact_kl
    torch.testing.assert_close(analytic.kl, kl, atol=1e-10, rtol=0)
    for estimate in (analytic.log_likelihood - analytic.kl, monte_carlo.log_weights):
        error = estimate.std(0) / math.sqrt(draws)
        assert ((estimate.mean(0) - closed_form).abs() <= 4 * error).all()


CLASSES = 3


def conditional_ppca(seed: int) -> tuple[VAE, Tensor, Tensor]:
    """Conditional PPCA through the library's context-reading MLPs: x | z, c ~ N(Wz + Vc + μ, σ²I), c one-hot.

    So p(x|c) = N(Vc + μ, WWᵀ + σ²I), and the posterior is the PPCA one of x − Vc; the
    encoder is that posterior widened and shifted (a strictly positive gap).  Returns
    the model, V and μ (W is the decoder's).
    """
    weight, shift = random_weight(seed)
    context_weight = 3 * torch.randn(D, CLASSES, dtype=DTYPE, generator=torch.Generator().manual_seed(seed + 1))
    decoder_net = MLP(LATENT, D, hidden=[], context_features=CLASSES).to(DTYPE)
    encoder_net = MLP(D, 2 * LATENT, hidden=[], context_features=CLASSES).to(DTYPE)
    m = weight.T @ weight + SIGMA**2 * torch.eye(LATENT, dtype=DTYPE)
    gain = torch.linalg.solve(m, weight.T)
    std = 1.6 * (SIGMA**2 * torch.linalg.inv(m).diagonal()).sqrt()
    with torch.no_grad():
        decoder, encoder = decoder_net.net[0], encoder_net.net[0]  # one linear layer on [input ‖ c]
        decoder.weight.copy_(torch.cat([weight, context_weight], 1))
        decoder.bias.copy_(shift)
        encoder.weight.zero_()
        encoder.weight[:LATENT] = torch.cat([gain, -gain @ context_weight], 1)
        encoder.bias[:LATENT] = 0.3 - gain @ shift
        encoder.bias[LATENT:] = torch.log(torch.expm1(std - MIN_SCALE))
    objective = ObjectiveParams(context="c")
    model = VAE(GaussianEncoder(encoder_net, LATENT), GaussianDecoder(decoder_net, (D,), 1, "fixed", SIGMA), StandardNormal((LATENT,)), objective)
    return model.to(DTYPE), context_weight, shift


def check_conditional_bounds(model: VAE, class_means: Tensor, shift: Tensor, covariance: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """For x ~ p(x|c) = N(Mc + μ, Σ), c one-hot: ELBO(x|c) < log p(x|c), and IWAE_256 meets log p(x|c) for c and a wrong c.

    Returns the points and their contexts.
    """

    def log_p(x: Tensor, c: Tensor) -> Tensor:
        return MultivariateNormal(c @ class_means.T + shift, covariance).log_prob(x)

    c = torch.nn.functional.one_hot(torch.arange(6) % CLASSES, CLASSES).to(DTYPE)
    torch.manual_seed(seed)
    x = MultivariateNormal(c @ class_means.T + shift, covariance).sample()
    exact = model.evidence(x, 20000, exact_kl=True, context=c)
    assert exact.exact_kl
    assert ((log_p(x, c) - (exact.log_likelihood.mean(0) - exact.kl)) > 0.05).all()
    wrong = c.roll(1, dims=0)
    for context in (c, wrong):
        estimate = iwae_estimates_given(model, x, context, k=256, repeats=200)
        assert (estimate - log_p(x, context)).abs().max() < 0.03
    assert (log_p(x, c) - log_p(x, wrong)).mean() > 2, "the classes should be far apart for this test to mean anything"
    return x, c


@torch.no_grad()
def test_a_conditional_vae_bounds_log_p_x_given_c_and_iwae_converges_to_it() -> None:
    """Sohn et al.'s conditional bound: ELBO(x|c) < log p(x|c), IWAE_k → log p(x|c); the condition is really used."""
    model, context_weight, shift = conditional_ppca(0)
    weight = model.decoder.net.net[0].weight[:, :LATENT]
    covariance = weight @ weight.T + SIGMA**2 * torch.eye(D, dtype=DTYPE)
    x, c = check_conditional_bounds(model, context_weight, shift, covariance, seed=7)
    torch.manual_seed(8)
    logged = model({"x": x, "context": c}, frozenset({"loss"}))["elbo"]  # the loss passes its context input on
    torch.manual_seed(8)
    one_draw = model.evidence(x, 1, exact_kl=True, context=c)
    torch.testing.assert_close(logged, (one_draw.log_likelihood - one_draw.kl).mean(), rtol=0, atol=1e-12)


def iwae_estimates_given(model: VAE, x: Tensor, c: Tensor, k: int, repeats: int) -> Tensor:
    """The mean of ``repeats`` IWAE_k estimates of log p(x|c) per point."""
    log_w = model.evidence(x.expand(repeats, *x.shape), k, exact_kl=False, context=c).log_weights
    return (torch.logsumexp(log_w, 0) - math.log(k)).mean(0)


class ShiftedPrior(nn.Module):
    """p(z|c) = N(Bc, I): a conditional prior (it declares ``context_shape``, as conditional flows do)."""

    def __init__(self, shift: Tensor) -> None:
        super().__init__()
        self.register_buffer("shift", shift)
        self.context_shape = torch.Size([shift.shape[1]])

    def forward(self, context: Tensor, temperature: float = 1.0) -> torch.distributions.Distribution:
        loc = context @ self.shift.T
        return torch.distributions.Independent(torch.distributions.Normal(loc, torch.full_like(loc, temperature)), 1)


def prior_conditional_ppca(seed: int) -> tuple[VAE, Tensor]:
    """PPCA under a class-conditional prior: z | c ~ N(Bc, I), x | z ~ N(Wz + μ, σ²I), so p(x|c) = N(WBc + μ, WWᵀ + σ²I).

    Only the prior reads c (``conditioned: [prior]``); the encoder is the posterior
    mean of the c = 0 prior, M⁻¹Wᵀ(x − μ), which misses the σ²M⁻¹Bc that the class
    adds, so its bound has a strictly positive gap.  The networks are plain
    ``nn.Linear``s, which could not take a context if they were given one.  Returns
    the model and the mean of p(x|c) as a function ``c ↦ WBc + μ``'s matrix ``WB``.
    """
    weight, shift = random_weight(seed)
    prior_shift = 3 * torch.randn(LATENT, CLASSES, dtype=DTYPE, generator=torch.Generator().manual_seed(seed + 1))
    model, _ = ppca(weight, shift, widen=1.3)
    model = VAE(model.encoder, model.decoder, ShiftedPrior(prior_shift), ObjectiveParams(context="c", conditioned=["prior"]))
    return model.to(DTYPE), weight @ prior_shift


@torch.no_grad()
def test_a_vae_with_only_its_prior_conditioned_bounds_log_p_x_given_c() -> None:
    """log p(x|c) ≥ E_q(z|x)[log p(x|z)] − KL(q(z|x) ‖ p(z|c)); IWAE_k converges to log p(x|c) with q blind to c."""
    model, class_means = prior_conditional_ppca(0)
    weight, shift = model.decoder.net.weight, model.decoder.net.bias
    covariance = weight @ weight.T + SIGMA**2 * torch.eye(D, dtype=DTYPE)
    _, c = check_conditional_bounds(model, class_means, shift, covariance, seed=3)
    torch.manual_seed(4)
    drawn = model.sample(30000, mean=False, context=c[:1].expand(30000, -1))  # x ~ p(x|c) for the first class
    torch.testing.assert_close(drawn.mean(0), c[0] @ class_means.T + shift, rtol=0, atol=0.05)


def test_conditioned_names_parts_that_can_read_the_context() -> None:
    weight, shift = random_weight(0)
    vae, _ = ppca(weight, shift)
    conditional_prior = ShiftedPrior(torch.zeros(LATENT, CLASSES, dtype=DTYPE))

    def build(prior: nn.Module, **objective: object) -> VAE:
        return VAE(vae.encoder, vae.decoder, prior, ObjectiveParams(context="c", **objective))

    with pytest.raises(ValueError, match=r"conditioned lists 'prior', which takes no context"):
        build(vae.prior, conditioned=["prior"])
    with pytest.raises(ValueError, match=r"'prior' is conditional \(it takes a context\), so list it in conditioned"):
        build(conditional_prior, conditioned=["encoder"])
    with pytest.raises(ValueError, match=r"conditioned names 'encodr'; did you mean 'encoder'\? \(this model's parts are encoder, decoder, prior\)"):
        build(conditional_prior, conditioned=["encodr", "prior"])
    with pytest.raises(ValueError, match="lists a part twice"):
        ObjectiveParams(context="c", conditioned=["prior", "prior"])
    with pytest.raises(ValueError, match="set context too"):
        ObjectiveParams(conditioned=["prior"])
    assert build(conditional_prior).conditioned == {"encoder", "decoder", "prior"}  # the default: every part that can
    assert build(vae.prior).conditioned == {"encoder", "decoder"}
    assert VAE(vae.encoder, vae.decoder, vae.prior, ObjectiveParams()).conditioned == frozenset()
