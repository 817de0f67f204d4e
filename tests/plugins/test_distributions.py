"""Priors: densities against closed forms, sampling counts and temperature."""

from __future__ import annotations

import math

import torch

from compose_gen_plugins.distributions import DiagonalNormal, StandardNormal


def test_standard_normal_log_prob_is_the_closed_form() -> None:
    prior = StandardNormal((3, 2))
    z = torch.randn(7, 3, 2)
    expected = -0.5 * (z**2).sum((-1, -2)) - 3 * math.log(2 * math.pi)
    assert torch.allclose(prior().log_prob(z), expected)


def test_sample_counts_follow_the_reference_and_temperature_scales_std() -> None:
    prior = StandardNormal((2,))
    torch.manual_seed(0)
    assert prior.sample(torch.zeros(11, 5)).shape == (11, 2)
    z = prior.sample(20000, temperature=0.5)
    assert abs(z.std().item() - 0.5) < 0.01
    assert not prior.sample(3).requires_grad


def test_learned_diagonal_normal_moves_with_gradients() -> None:
    prior = DiagonalNormal((2,))
    z = prior.rsample(5)
    z.sum().backward()
    assert prior.loc.grad is not None and torch.allclose(prior.loc.grad, torch.full((2,), 5.0))
    with torch.no_grad():
        prior.log_scale.fill_(math.log(2.0))
    assert torch.allclose(prior().log_prob(torch.zeros(1, 2)), torch.tensor([-math.log(2 * math.pi) - 2 * math.log(2.0)]))
