"""The quality statistics against closed forms, hand-computed cases and scipy."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compose_gen_plugins.quality.statistics import (
    closest_pairs,
    frechet_distance,
    gaussian_moments,
    inception_score,
    knn_precision_recall,
    mode_statistics,
    nearest_neighbour_distances,
    pair_distances,
    pairwise_distances,
    permutation_p_value,
    support_estimate,
)

scipy_linalg = pytest.importorskip("scipy.linalg")


def random_spd(seed: int, d: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64)


# --- Fréchet distance -------------------------------------------------------------------------


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    mean1, mean2 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 1.0, 0.0])
    var1, var2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    expected = (mean1 - mean2).square().sum() + (var1.sqrt() - var2.sqrt()).square().sum()  # 5 + 4 + 1
    assert frechet_distance(mean1, torch.diag(var1), mean2, torch.diag(var2)) == pytest.approx(float(expected))
    assert float(expected) == pytest.approx(10.0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 6))
def test_frechet_distance_matches_scipy_sqrtm_for_non_commuting_covariances(seed, d):
    cov1, cov2 = random_spd(seed, d), random_spd(seed + 1, d)
    mean1, mean2 = torch.randn(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
    cross = scipy_linalg.sqrtm((cov1 @ cov2).numpy()).real.trace()
    expected = float((mean1 - mean2).square().sum() + cov1.trace() + cov2.trace()) - 2 * cross
    assert frechet_distance(mean1, cov1, mean2, cov2) == pytest.approx(expected, rel=1e-6, abs=1e-8)
    assert frechet_distance(mean1, cov1, mean2, cov2) == pytest.approx(frechet_distance(mean2, cov2, mean1, cov1))


def test_gaussian_moments_are_the_mean_and_the_unbiased_covariance_of_the_flattened_rows():
    """Dividing by n − 1, not n: at a few hundred samples in high dimension the difference moves a Fréchet distance."""
    features = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    mean, cov = gaussian_moments(features)
    rows = features.flatten(1).double()
    torch.testing.assert_close(mean, rows.mean(0))
    torch.testing.assert_close(cov, torch.cov(rows.T, correction=1))
    with pytest.raises(ValueError, match="at least 2 feature vectors"):
        gaussian_moments(features[:1])


def test_frechet_distance_on_samples_is_near_zero_and_grows_as_the_squared_mean_shift():
    generator = torch.Generator().manual_seed(0)
    scale = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.8, 0.0], [0.0, 0.3, 0.4]])
    draw = lambda n: torch.randn(n, 3, generator=generator) @ scale.T  # noqa: E731
    real = gaussian_moments(draw(20_000))
    same = frechet_distance(*gaussian_moments(draw(20_000)), *real)
    assert same < 2e-3
    distances = []
    for shift in (0.5, 1.0, 2.0):
        moved = gaussian_moments(draw(20_000) + torch.tensor([shift, 0.0, 0.0]))
        distances.append(frechet_distance(*moved, *real))
        assert distances[-1] == pytest.approx(shift**2, abs=0.03)
    assert distances == sorted(distances)


def test_frechet_distance_rejects_mismatched_moments():
    with pytest.raises(ValueError, match="matching moments"):
        frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(3), torch.eye(3))


# --- Inception score --------------------------------------------------------------------------


def test_inception_score_is_one_for_constant_predictions():
    probs = torch.tensor([0.2, 0.5, 0.3]).expand(50, 3)
    assert inception_score(probs)[0] == pytest.approx(1.0)


def test_inception_score_is_the_class_count_for_confident_uniform_coverage():
    probs = torch.eye(4).repeat(10, 1)
    assert inception_score(probs)[0] == pytest.approx(4.0)


def test_inception_score_equals_exp_mean_kl_on_a_hand_case():
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    # p(y) = (0.75, 0.25); KL_1 = 0.5 ln(4/3), KL_2 = ln(4/3); IS = exp(0.75 ln(4/3))
    assert inception_score(probs)[0] == pytest.approx((4 / 3) ** 0.75)


def test_inception_score_splits_score_chunks_separately():
    probs = torch.cat([torch.tensor([1.0, 0.0]).expand(10, 2), torch.tensor([0.0, 1.0]).expand(10, 2)])
    assert inception_score(probs, splits=1) == pytest.approx((2.0, 0.0))
    assert inception_score(probs, splits=2) == pytest.approx((1.0, 0.0))


# --- precision and recall ---------------------------------------------------------------------


def test_precision_recall_on_a_hand_case():
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])  # k=1 radii: 1 each
    fake = torch.tensor([[0.5], [0.6], [10.0], [10.2]])  # k=1 radii: 0.1, 0.1, 0.2, 0.2
    assert knn_precision_recall(real, fake, k=1) == pytest.approx((0.5, 0.0))


def test_precision_recall_of_identical_and_disjoint_sets():
    points = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    assert knn_precision_recall(points, points.clone()) == (1.0, 1.0)
    assert knn_precision_recall(points, points + 100) == (0.0, 0.0)


def test_precision_recall_of_half_overlapping_squares_is_about_one_half():
    generator = torch.Generator().manual_seed(0)
    real = torch.rand(3000, 2, generator=generator)
    fake = torch.rand(3000, 2, generator=generator) + torch.tensor([0.5, 0.0])
    precision, recall = knn_precision_recall(real, fake, k=3)
    assert precision == pytest.approx(0.5, abs=0.04)
    assert recall == pytest.approx(0.5, abs=0.04)


def test_precision_falls_when_samples_leave_the_data_and_recall_when_they_collapse():
    generator = torch.Generator().manual_seed(1)
    real = torch.randn(1000, 2, generator=generator)
    collapsed = 0.1 * torch.randn(1000, 2, generator=generator)
    spread = 3 * torch.randn(1000, 2, generator=generator)
    precision_c, recall_c = knn_precision_recall(real, collapsed)
    precision_s, recall_s = knn_precision_recall(real, spread)
    assert precision_c > 0.95 and recall_c < 0.2
    assert precision_s < 0.65 and recall_s > 0.9


# --- mode statistics --------------------------------------------------------------------------


def test_mode_statistics_on_a_hand_case():
    modes = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    samples = torch.tensor([[0.5, 0.0], [2.9, 0.0], [3.1, 0.0], [10.0, 2.0]])
    distances = pairwise_distances(samples, modes)
    high_quality, counts = mode_statistics(distances, std=1.0, k=3.0)
    assert high_quality.tolist() == [True, True, False, True]
    assert counts.tolist() == [2, 1]
    _, per_mode = mode_statistics(distances, std=torch.tensor([0.5, 1.0]), k=3.0)
    assert per_mode.tolist() == [1, 1]  # 2.9 > 3 * 0.5


# --- birthday-test pieces ---------------------------------------------------------------------


def test_pairwise_distances_are_exact_for_duplicates():
    x = torch.randn(40, 64, generator=torch.Generator().manual_seed(0)) * 100
    both = torch.cat([x, x])
    distances = pairwise_distances(both, both, chunk=16)
    assert torch.equal(distances.diagonal(offset=40), torch.zeros(40))
    direct = (both.double()[:, None] - both.double()[None]).norm(dim=-1)
    assert torch.allclose(distances.double(), direct, rtol=1e-5)


def test_closest_pairs_lists_the_closest_pairs_closest_first():
    x = torch.tensor([[0.0], [0.1], [5.0], [5.3]])
    distances = pair_distances(x)
    assert int((distances < 0.5).sum()) == 2, "each pair once, no row with itself"
    index, distance = closest_pairs(distances, 100)
    assert index.tolist() == [[0, 1], [2, 3], [1, 2], [0, 2], [1, 3], [0, 3]]
    assert distance.tolist() == pytest.approx([0.1, 0.3, 4.9, 5.0, 5.2, 5.3])
    index, distance = closest_pairs(distances, 2)
    assert index.tolist() == [[0, 1], [2, 3]] and distance.tolist() == pytest.approx([0.1, 0.3])


def test_nearest_neighbour_distances_in_chunks_are_those_of_all_distances_at_once():
    points = torch.randn(300, 5, generator=torch.Generator().manual_seed(0))
    everything = pairwise_distances(points, points).fill_diagonal_(math.inf)
    for k in (1, 3):
        expected = everything.kthvalue(k, dim=1).values
        assert torch.equal(nearest_neighbour_distances(points, k, chunk=64), expected)
        assert torch.equal(nearest_neighbour_distances(points, k, chunk=1000), expected)


def test_support_estimate_inverts_the_birthday_formula():
    # s = 10 draws, on average 0.5 colliding pairs: N = 10 * 9 / (2 * 0.5) = 90
    assert support_estimate(10, 0.5, batches=5) == pytest.approx(90.0)
    # no pair in 5 batches: the 95% Poisson bound on the rate is 3/5, so N >= 90 / (2 * 0.6) = 75
    assert support_estimate(10, 0.0, batches=5) == pytest.approx(75.0)
    # at collision probability 1/2 (rate ln 2) the estimate is s(s-1)/(2 ln 2), about 0.72 s^2
    assert support_estimate(400, math.log(2), batches=1) == pytest.approx(400 * 399 / (2 * math.log(2)))


def test_permutation_p_value_matches_exact_enumeration_on_a_small_case():
    larger, smaller = torch.tensor([3.0, 1.0, 2.0]), torch.tensor([0.0, 2.0, 1.0, 0.0])
    pooled, observed = torch.cat([larger, smaller]), larger.mean() - smaller.mean()
    splits = list(itertools.combinations(range(7), 3))
    extreme = sum(
        float(pooled[list(c)].mean() - pooled[[i for i in range(7) if i not in c]].mean()) >= float(observed) - 1e-9
        for c in splits
    )
    estimate = permutation_p_value(larger, smaller, torch.Generator().manual_seed(0), permutations=20_000)
    assert estimate == pytest.approx(extreme / len(splits), abs=0.01)


def test_permutation_p_value_drawn_in_chunks_is_the_one_drawn_at_once():
    """Chunks bound the memory (9999 relabelings of a million values would take ~240 GB at once), not the result."""
    larger, smaller = torch.rand(30, generator=torch.Generator().manual_seed(1)) + 0.1, torch.rand(40, generator=torch.Generator().manual_seed(2))
    at_once = permutation_p_value(larger, smaller, torch.Generator().manual_seed(0), permutations=999)
    for chunk in (70, 7 * 70 + 3, 10**9):
        assert permutation_p_value(larger, smaller, torch.Generator().manual_seed(0), permutations=999, chunk=chunk) == at_once


def test_permutation_p_value_extremes():
    generator = torch.Generator().manual_seed(0)
    assert permutation_p_value(torch.zeros(20), torch.zeros(20), generator) == 1.0  # all tied
    assert permutation_p_value(torch.full((20,), 5.0), torch.zeros(20), generator, permutations=999) == 1e-3
