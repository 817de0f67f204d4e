"""The reusable fake models behave as documented, and the metrics run on CUDA when there is one."""

from __future__ import annotations

import pytest
import torch

from compose_gen_plugins.quality.birthday import BirthdayParams, birthday_paradox
from compose_gen_plugins.quality.classifier import ClassifierParams
from compose_gen_plugins.quality.fidelity import FrechetParams, measure_frechet_distance
from compose_gen_plugins.quality.modes import ModeCoverageParams, mode_coverage
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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_metrics_run_on_cuda(mixture_splits, image_splits, modes, context):
    cuda = torch.device("cuda")
    on_modes = FixedSampler(mixture_splits.test.fields["x"], replace=False).to(cuda)
    coverage = mode_coverage(ModeCoverageParams(n=800), context(on_modes, mixture_splits, device=cuda))
    assert coverage["modes_covered"] == 8
    images = FixedSampler(image_splits.test.fields["x"], replace=False).to(cuda)
    tiny = ClassifierParams(width=4, feature_dim=8, epochs=8, batch_size=64, lr=3e-3)
    fd = measure_frechet_distance(FrechetParams(n=200, classifier=tiny), context(images, image_splits, device=cuda))
    assert fd["classifier_accuracy"] > 0.95
    collapsed = FixedSampler(image_splits.train.fields["x"][:20], noise=1e-4).to(cuda)
    result = birthday_paradox(BirthdayParams(s=50, batches=10), context(collapsed, image_splits, device=cuda))
    assert result["birthday_pass"] == 0.0
