"""The reusable fake models behave as documented."""

from __future__ import annotations

import pytest
import torch

from compose_gen.testing.doubles import DistributionSampler, FixedSampler


def test_fixed_sampler_draws_pool_rows_with_or_without_replacement():
    pool = torch.arange(10.0)[:, None]
    distinct = FixedSampler(pool, replace=False).sample(10)
    assert sorted(distinct.flatten().tolist()) == list(range(10))
    with pytest.raises(ValueError, match="asked for 11 of 10"):
        FixedSampler(pool, replace=False).sample(11)
    drawn = FixedSampler(pool, seed=3).sample(1000)
    assert set(drawn.flatten().tolist()) == set(range(10))
    assert torch.equal(drawn, FixedSampler(pool, seed=3).sample(1000))
    noisy = FixedSampler(pool, noise=0.1).sample(1000)
    assert 0.08 < float((noisy - noisy.round()).std()) < 0.12


def test_distribution_sampler_is_seeded_and_leaves_the_global_rng_alone():
    normal = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    state = torch.random.get_rng_state()
    first, second = DistributionSampler(normal, seed=1), DistributionSampler(normal, seed=1)
    assert torch.equal(first.sample(5), second.sample(5))
    assert not torch.equal(first.sample(5), DistributionSampler(normal, seed=1).sample(5))  # a new draw per call
    assert torch.equal(torch.random.get_rng_state(), state)
