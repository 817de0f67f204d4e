"""Numerical helpers over torch.distributions conventions."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal

from compose_gen.core.distributions import MAX_DRAWS, bits_per_dim, broadcast_value, draw_count, log_mean_exp, sum_rightmost


def test_broadcast_value_gives_the_shape_torch_distributions_score_at() -> None:
    """A value of batch (n,) under a distribution of batch (k, n) is scored at (k, n), as Normal.log_prob broadcasts it."""
    q = Independent(Normal(torch.randn(4, 5, 3), torch.ones(4, 5, 3)), 1)
    x = torch.randn(5, 3)
    expanded = broadcast_value(x, q)
    assert expanded.shape == (4, 5, 3) and all(torch.equal(row, x) for row in expanded)
    torch.testing.assert_close(q.log_prob(expanded), q.log_prob(x))
    assert broadcast_value(x, Independent(Normal(torch.zeros(3), 1.0), 1)).shape == (5, 3)  # the value's batch is the broader
    same = torch.randn(4, 5, 3)
    assert broadcast_value(same, q) is same



def test_broadcast_value_of_another_batch_says_both_shapes() -> None:
    """A conditional flow's log_prob of 5 rows of x with 3 rows of context raised torch's 'Attempting to broadcast a
    dimension of length 3', naming neither."""
    conditional = Independent(Normal(torch.zeros(3, 2), 1.0), 1)
    with pytest.raises(ValueError, match=r"values of batch shape \(5,\) do not broadcast with the distribution's batch shape \(3,\)"):
        broadcast_value(torch.zeros(5, 2), conditional)

def test_log_mean_exp_and_sum_rightmost_match_their_definitions() -> None:
    value = torch.randn(6, 4, dtype=torch.float64) * 50
    torch.testing.assert_close(log_mean_exp(value, 0), value.exp().mean(0).log())
    torch.testing.assert_close(log_mean_exp(torch.full((3,), 1000.0)), torch.tensor(1000.0))  # stable where exp overflows
    assert math.isfinite(log_mean_exp(torch.tensor([-1e4, 0.0])).item())
    torch.testing.assert_close(sum_rightmost(value, 1), value.sum(-1))
    assert sum_rightmost(value, 0) is value


def test_bits_per_dim_of_a_hand_computed_case() -> None:
    """2 values, 3 nats in model space, pixels 0..16 scaled by 1/16 (ladj −2 ln 16): 3 + 2 ln 16 nats in data space."""
    assert bits_per_dim(3 + 2 * math.log(16), 2) == pytest.approx(3 / (2 * math.log(2)) + 4)
    assert bits_per_dim(torch.tensor(2 * math.log(2)), 2).item() == pytest.approx(1.0)


def test_draw_count_takes_a_whole_count_or_the_rows_of_a_tensor_and_refuses_the_rest() -> None:
    assert draw_count(7) == 7 and draw_count(MAX_DRAWS + 1) == MAX_DRAWS + 1 and draw_count(torch.zeros(5, 3)) == 5
    for like in (1e30, 2.0, True, torch.tensor(3.0), "x"):
        with pytest.raises(TypeError, match=r"^draws one sample per row of a tensor, or a whole count of samples; got "):
            draw_count(like)
    for count in (0, -1):  # 0 drew an empty batch that failed in a reshape, blamed on the critic
        with pytest.raises(ValueError, match=r"^draws at least one sample; got a count of "):
            draw_count(count)
