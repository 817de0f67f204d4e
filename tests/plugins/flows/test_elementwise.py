"""Elementwise bijectors: the logit preprocessing on a hand-computed case, identities at init."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from compose_gen_plugins.flows.elementwise import ElementwiseAffine, Inverse, Logit, LogitParams, build_logit, build_sigmoid


def test_logit_value_and_ladj_by_hand():
    logit = build_logit(LogitParams(shape=[2], alpha=0.1), None)
    x = torch.tensor([0.2, 0.7], dtype=torch.float64)
    p = torch.tensor([0.26, 0.66], dtype=torch.float64)  # 0.1 + 0.8 x
    y, ladj = logit(x)
    torch.testing.assert_close(y, torch.log(p / (1 - p)))
    torch.testing.assert_close(ladj, 2 * math.log(0.8) - torch.log(p * (1 - p)).sum())


def test_logit_margin_keeps_pixel_extremes_finite_and_in_the_codomain():
    logit = build_logit(LogitParams(shape=[3], alpha=0.05), None)
    y, ladj = logit(torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(y, torch.tensor([math.log(0.05 / 0.95), 0.0, math.log(0.95 / 0.05)]))
    assert torch.isfinite(ladj) and logit.codomain.check(y).all()


def test_a_logit_without_margin_takes_only_the_open_interval():
    """logit(0) and logit(1) are infinite: data holding an exact 0 or 1 passed validate, then made the loss NaN."""
    logit = build_logit(LogitParams(shape=[3], alpha=0.0), None)
    assert logit.domain.check(torch.tensor([0.0, 0.5, 1.0])).tolist() == [False, True, False]
    assert build_logit(LogitParams(shape=[3], alpha=0.05), None).domain.check(torch.tensor([0.0, 1.0])).all()


def test_sigmoid_is_the_inverse_of_logit():
    params = LogitParams(shape=[4], alpha=0.05)
    logit, sigmoid = build_logit(params, None), build_sigmoid(params, None)
    y = torch.randn(3, 4)
    x, ladj = sigmoid(y)
    torch.testing.assert_close((x, ladj), logit.inverse(y))
    assert isinstance(sigmoid, Inverse) and sigmoid.codomain is logit.domain
    assert sigmoid.domain.lower_bound == logit.codomain.lower_bound == math.log(0.05 / 0.95)


def test_affine_starts_as_the_identity_and_nice_scaling_has_no_shift():
    x = torch.randn(5, 2, 3)
    y, ladj = ElementwiseAffine((2, 3))(x)
    assert torch.equal(y, x) and torch.equal(ladj, torch.zeros(5))
    assert [name for name, _ in ElementwiseAffine((3,), shift=False).named_parameters()] == ["log_scale"]


def test_logit_margin_must_leave_an_interval():
    with pytest.raises(ValidationError, match="alpha"):
        LogitParams(shape=[2], alpha=0.5)


def test_logit_inverse_keeps_its_log_determinant_exact_in_the_far_tails() -> None:
    """log(1 − σ(y)) computed as log1p(−σ(y)) moved in steps of ~1e-3 beyond y ≈ 25; softplus does not."""
    from compose_gen.testing.bijectors import check_case

    y = torch.tensor([[30.0, -30.0, 45.0]], dtype=torch.float64)
    exact = -(torch.nn.functional.softplus(-y) + torch.nn.functional.softplus(y)).sum(-1)
    torch.testing.assert_close(Logit((3,), alpha=0.0).double().inverse(y)[1], exact, rtol=0, atol=1e-12)
    check_case(Logit((3,), alpha=0.0), (4,), seed=0, scale=8.0)
