"""The continuous Bernoulli from its logit, against quadrature of its density on a fine grid of [0, 1] (float64).

The density p(x) = C λ^x (1 − λ)^{1−x} is integrated with the trapezoid rule on
400 001 points, whose error for these smooth densities (at L = ±60 concentrated
within about 1/60 of an end) is below 1e-9; the tolerances are 1e-8.  The logits
reach past |L| ≈ 16, where torch's ``ContinuousBernoulli`` clips λ and errs by
0.1 nats at L = 40 in float64.
"""

from __future__ import annotations

import pytest
import torch
from torch.distributions import ContinuousBernoulli, kl_divergence

from compose_gen_plugins.latent.continuous_bernoulli import StableContinuousBernoulli

LOGITS = [-60.0, -40.0, -20.0, -3.0, -0.5, -0.05, -1e-3, 0.0, 1e-3, 0.0999, 0.1, 0.5, 0.99, 1.0, 3.0, 20.0, 40.0, 60.0]
GRID = torch.linspace(0.0, 1.0, 400_001, dtype=torch.float64)


def density(logit: float) -> tuple[StableContinuousBernoulli, torch.Tensor]:
    d = StableContinuousBernoulli(logits=torch.tensor(logit, dtype=torch.float64))
    return d, d.log_prob(GRID).exp()


@pytest.mark.parametrize("logit", LOGITS)
def test_the_density_integrates_to_one_and_has_the_stated_moments_and_entropy(logit: float) -> None:
    d, p = density(logit)
    assert torch.trapezoid(p, GRID).item() == pytest.approx(1.0, abs=1e-8)
    mean = torch.trapezoid(GRID * p, GRID)
    assert d.mean.item() == pytest.approx(mean.item(), abs=1e-8)
    assert d.variance.item() == pytest.approx(torch.trapezoid((GRID - mean).square() * p, GRID).item(), abs=1e-8)
    assert d.entropy().item() == pytest.approx(-torch.trapezoid(p * d.log_prob(GRID), GRID).item(), abs=1e-7)


@pytest.mark.parametrize("logit", LOGITS)
def test_the_cdf_accumulates_the_density_and_the_icdf_inverts_it(logit: float) -> None:
    d, p = density(logit)
    accumulated = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumulative_trapezoid(p, GRID)])
    points = torch.arange(0, len(GRID), 40_000)
    torch.testing.assert_close(d.cdf(GRID[points]), accumulated[points], atol=1e-8, rtol=0)
    u = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    torch.testing.assert_close(d.cdf(d.icdf(u)), u, atol=1e-6, rtol=0)


def test_samples_follow_the_logit_past_where_torch_clips_it() -> None:
    """At L = 40 the mean is 1 − 1/40 − … = 0.975 (torch's class: 0.937); the standard error of 200 000 draws is 6e-5."""
    logits = torch.full((200_000,), 40.0)
    torch.manual_seed(0)
    draws = StableContinuousBernoulli(logits=logits).sample()
    assert draws.mean().item() == pytest.approx(StableContinuousBernoulli(logits=torch.tensor(40.0)).mean.item(), abs=5e-4)
    assert StableContinuousBernoulli(logits=torch.tensor(40.0)).mean.item() == pytest.approx(0.975, abs=1e-6)
    assert ContinuousBernoulli(logits=torch.tensor(40.0)).mean.item() < 0.94  # what the decoder used to report


def test_it_agrees_with_torch_where_torch_is_accurate() -> None:
    logits = torch.tensor([-5.0, -1.0, -0.01, 0.01, 1.0, 5.0], dtype=torch.float64)
    ours, theirs = StableContinuousBernoulli(logits=logits), ContinuousBernoulli(logits=logits)
    x = torch.tensor([0.0, 0.2, 0.5, 0.7, 0.9, 1.0], dtype=torch.float64)
    torch.testing.assert_close(ours.log_prob(x), theirs.log_prob(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.mean, theirs.mean, atol=1e-6, rtol=0)


@pytest.mark.parametrize("quantity", ["_cont_bern_log_norm", "mean", "variance", "entropy"])
def test_gradients_are_right_on_both_sides_of_each_series_radius_and_finite_far_out(quantity: str) -> None:
    def f(logits: torch.Tensor) -> torch.Tensor:
        value = getattr(StableContinuousBernoulli(logits=logits), quantity)
        return value() if callable(value) else value

    near = torch.tensor([-1.01, -0.99, -0.101, -0.099, -0.02, 0.021, 0.099, 0.101, 0.99, 1.01, 7.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(f, (near.requires_grad_(),))
    far = torch.tensor([-500.0, -60.0, 0.0, 60.0, 500.0], requires_grad=True)
    f(far).sum().backward()
    assert torch.isfinite(far.grad).all()


def test_reparameterised_draws_carry_gradients_to_the_logits() -> None:
    """d x/d L at a fixed u, from F(x; L) = u: ∂x/∂L = −(∂F/∂L)/(∂F/∂x), here by finite differences of the icdf."""
    logits = torch.tensor([-30.0, -2.0, 0.01, 0.5, 30.0], dtype=torch.float64, requires_grad=True)
    u = torch.full_like(logits, 0.37)
    x = StableContinuousBernoulli(logits=logits).icdf(u)
    (grad,) = torch.autograd.grad(x.sum(), logits)
    h = 1e-6
    with torch.no_grad():
        numeric = (StableContinuousBernoulli(logits=logits + h).icdf(u) - StableContinuousBernoulli(logits=logits - h).icdf(u)) / (2 * h)
    torch.testing.assert_close(grad, numeric, atol=1e-6, rtol=1e-5)


def test_a_draw_at_u_0_is_0_with_a_finite_gradient_however_large_the_logit() -> None:
    """torch.rand returns exactly 0 about once in 2²⁴ draws; there log(v + (1 − v)e^{−|L|}) was log 0 past |L| ≈ 100
    (float32): a NaN gradient, a rare NaN event in training, and 1.7e-4 where the draw is 0."""
    logits = torch.tensor([-1e4, -150.0, -100.0, 100.0, 150.0, 1e4], requires_grad=True)
    u = torch.tensor([1.0 - 2**-24, 1.0 - 2**-24, 1.0 - 2**-24, 0.0, 0.0, 0.0])  # by 1 − X ~ CB(−L), each side's u = 0
    x = StableContinuousBernoulli(logits=logits).icdf(u)
    assert x[3:].tolist() == [0.0, 0.0, 0.0]
    x.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_the_kl_divergence_is_the_expected_log_ratio() -> None:
    """E_p[log p − log q] by quadrature, including logits where torch's own KL (clipped λ) is off by 10 nats."""
    for a, b in [(40.0, 30.0), (-3.0, 2.0), (0.0, 1e-3), (0.5, 0.5)]:
        p = StableContinuousBernoulli(logits=torch.tensor(a, dtype=torch.float64))
        q = StableContinuousBernoulli(logits=torch.tensor(b, dtype=torch.float64))
        expected = torch.trapezoid(p.log_prob(GRID).exp() * (p.log_prob(GRID) - q.log_prob(GRID)), GRID)
        assert kl_divergence(p, q).item() == pytest.approx(expected.item(), abs=1e-7)


def test_it_expands_as_torch_distributions_do() -> None:
    d = StableContinuousBernoulli(logits=torch.tensor([40.0, -1.0])).expand((3, 2))
    assert isinstance(d, StableContinuousBernoulli) and d.batch_shape == (3, 2)
    torch.testing.assert_close(d.mean[0], StableContinuousBernoulli(logits=torch.tensor([40.0, -1.0])).mean)
