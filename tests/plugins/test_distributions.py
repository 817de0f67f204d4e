"""Priors: densities against closed forms, sampling counts and temperature."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Distribution, Independent, Normal, kl_divergence
from torch.utils._python_dispatch import TorchDispatchMode

from compose_gen_plugins.distributions import DiagonalNormal, StandardNormal
from compose_gen_plugins.latent.priors import GaussianMixturePrior


def test_standard_normal_log_prob_is_the_closed_form() -> None:
    prior = StandardNormal((3, 2))
    z = torch.randn(7, 3, 2)
    expected = -0.5 * (z**2).sum((-1, -2)) - 3 * math.log(2 * math.pi)
    assert torch.allclose(prior().log_prob(z), expected)


@pytest.mark.parametrize("posterior_shape", [(5, 3), (2, 5, 3), (3,)])
def test_kl_to_the_standard_normal_matches_the_general_gaussian_formula(posterior_shape) -> None:
    torch.manual_seed(0)
    loc = torch.randn(posterior_shape, dtype=torch.float64, requires_grad=True)
    scale = torch.rand(posterior_shape, dtype=torch.float64).add(0.1).requires_grad_()
    q = Independent(Normal(loc, scale), 1)
    prior = StandardNormal((3,)).double()
    general = Independent(Normal(prior.loc, prior.scale), 1)
    kl, reference = kl_divergence(q, prior()), kl_divergence(q, general)
    assert kl.shape == reference.shape
    assert torch.allclose(kl, reference)
    grads = torch.autograd.grad(kl.sum(), (loc, scale))
    assert all(torch.allclose(g, r) for g, r in zip(grads, torch.autograd.grad(reference.sum(), (loc, scale)), strict=True))


def test_kl_broadcasts_a_posterior_smaller_than_the_prior() -> None:
    q = Normal(torch.zeros(()), torch.full((), 2.0))
    kl = kl_divergence(q, StandardNormal((4,))().base_dist)
    assert kl.shape == (4,)
    assert torch.allclose(kl, torch.full((4,), 0.5 * (4 - 1) - math.log(2.0)))


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


class HostReads(TorchDispatchMode):
    """Counts the ops that read a tensor's value back to the host (``.item()``, ``bool(t)``, ``if t.all():``)."""

    READS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default)

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in self.READS
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("prior", [StandardNormal((3,)), DiagonalNormal((3,)), GaussianMixturePrior(3, 4)], ids=type)
def test_a_prior_reads_nothing_back_from_the_device(prior, monkeypatch) -> None:
    """On a GPU each read is a host sync per training step, beyond the trainer's one; torch's argument checks (on by
    default, unless torch.compile turned them off) made three of them in the diagonal normal's every step."""
    monkeypatch.setattr(Distribution, "_validate_args", True)
    z = torch.randn(5, 3, requires_grad=True)
    with HostReads() as reads:
        prior().log_prob(z).sum().backward()
        prior(temperature=0.5).sample((2,))
    assert reads.count == 0



@pytest.mark.parametrize("prior", [StandardNormal((2,)), DiagonalNormal((2,))])
def test_a_temperature_that_is_no_number_is_refused_as_such(prior) -> None:
    """A graph's noise(x) or noise.sample(x, x) passed x as the temperature: 'Boolean value of Tensor ... is ambiguous'."""
    for call in (lambda: prior(torch.zeros(5, 2)), lambda: prior.sample(torch.zeros(5, 2), torch.zeros(5, 2))):
        with pytest.raises(TypeError, match=r"a prior's temperature is a number, got a Tensor of shape \(5, 2\); a graph draws"):
            call()
    for temperature in (0.5, 2, np.float32(0.5), np.int64(2), torch.tensor(0.5)):  # what run.sample(temperature=...) takes
        assert prior.sample(3, temperature).shape == (3, 2)
    for temperature in (True, torch.tensor(True), torch.tensor(0.5 + 0j)):
        with pytest.raises(TypeError, match="a prior's temperature is a number"):
            prior.sample(3, temperature)
