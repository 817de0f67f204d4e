"""Rational-quadratic splines: monotone, onto [-B, B], identity tails, exact derivatives and inverse."""

from __future__ import annotations

import pytest
import torch

from compose_gen import make_catalogue
from compose_gen.testing.bijectors import check_type
from compose_gen_plugins.flows import coupling, spline
from compose_gen_plugins.flows.spline import (
    SplineCouplingParams,
    SplineTransform,
    build_spline_coupling,
    rational_quadratic_spline,
)

CATALOGUE = make_catalogue([spline, coupling], entry_points=False)
BOUND = 2.5


def _random_spline(points: torch.Tensor, bins: int = 5, seed: int = 0, scale: float = 2.0) -> tuple:
    """Random unnormalised widths, heights and interior derivatives for every point."""
    generator = torch.Generator().manual_seed(seed)
    shape = (*points.shape, 3 * bins - 1)
    raw = scale * torch.randn(shape, generator=generator, dtype=points.dtype)
    return raw[..., :bins], raw[..., bins : 2 * bins], raw[..., 2 * bins :]


def _apply(points: torch.Tensor, raw: tuple, inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    return rational_quadratic_spline(points, *raw, inverse=inverse, bound=BOUND)


@pytest.mark.parametrize("name", ["spline_coupling", "spline_autoregressive"])
def test_conformance(name: str) -> None:
    check_type(CATALOGUE, name, max_examples=4)


def test_monotone_and_onto_the_interval() -> None:
    grid = torch.linspace(-BOUND, BOUND, 2001, dtype=torch.float64)
    raw = tuple(part.expand(len(grid), -1) for part in _random_spline(torch.zeros(()), seed=3, scale=3.0))
    values, log_derivative = _apply(grid, raw)
    assert (values.diff() > 0).all(), "strictly increasing"
    torch.testing.assert_close(values[[0, -1]], torch.tensor([-BOUND, BOUND], dtype=torch.float64))
    assert torch.isfinite(log_derivative).all()


def test_tails_are_the_identity_and_the_map_is_c1_at_the_bound() -> None:
    outside = torch.tensor([-50.0, -BOUND - 1e-3, BOUND + 1e-3, 7.0], dtype=torch.float64)
    values, log_derivative = _apply(outside, _random_spline(outside))
    assert torch.equal(values, outside) and torch.equal(log_derivative, torch.zeros(4, dtype=torch.float64))
    edges = torch.tensor([-BOUND, BOUND], dtype=torch.float64)
    _, edge_log_derivative = _apply(edges, _random_spline(edges))
    torch.testing.assert_close(edge_log_derivative, torch.zeros(2, dtype=torch.float64))  # slope 1 meets the tails


def test_log_derivative_matches_autograd_and_inverse_inverts() -> None:
    points = (torch.rand(400, dtype=torch.float64) * 2 - 1) * (BOUND + 0.5)
    raw = _random_spline(points, seed=1)
    inputs = points.clone().requires_grad_()
    values, log_derivative = _apply(inputs, raw)
    (slope,) = torch.autograd.grad(values.sum(), inputs)
    torch.testing.assert_close(log_derivative, slope.log())
    back, inverse_log_derivative = _apply(values.detach(), raw, inverse=True)
    torch.testing.assert_close(back, points)
    torch.testing.assert_close(inverse_log_derivative, -log_derivative.detach())


def test_zero_parameters_give_the_identity() -> None:
    points = torch.linspace(-3 * BOUND, 3 * BOUND, 101, dtype=torch.float64)
    zeros = torch.zeros(101, 4, dtype=torch.float64)
    values, log_derivative = rational_quadratic_spline(points, zeros, zeros, zeros[:, :3], bound=BOUND)
    torch.testing.assert_close(values, points)
    torch.testing.assert_close(log_derivative, torch.zeros_like(points))


def test_extreme_parameters_stay_finite_monotone_and_invertible() -> None:
    points = torch.linspace(-BOUND, BOUND, 301, dtype=torch.float64)
    raw = tuple(1e3 * part.expand(len(points), -1) for part in _random_spline(torch.zeros(()), seed=5))
    values, log_derivative = _apply(points, raw)
    assert torch.isfinite(values).all() and torch.isfinite(log_derivative).all() and (values.diff() >= 0).all()
    assert values.abs().max() <= BOUND
    # Saturated bins make some slopes ~1e-9, so x is ill-conditioned given y; y given x is not.
    back, _ = _apply(points, raw, inverse=True)
    forward_again, _ = _apply(back, raw)
    torch.testing.assert_close(forward_again, points, atol=1e-6, rtol=0)


def test_coupling_keeps_the_conditioning_half_and_reads_only_it() -> None:
    bijector = build_spline_coupling(SplineCouplingParams(shape=[1, 4, 4], hidden=[6], mask="checkerboard"), None)
    bijector = bijector.double()
    with torch.no_grad():
        for parameter in bijector.parameters():
            parameter.add_(torch.randn_like(parameter))
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    y, _ = bijector(x)
    kept = bijector.mask.bool()
    assert torch.equal(y[:, kept], x[:, kept]) and not torch.allclose(y[:, ~kept], x[:, ~kept])
    jac = torch.autograd.functional.jacobian(lambda v: bijector(v)[0].flatten(), x[0]).reshape(16, 16)
    changed = ~kept.flatten()
    off_diagonal = jac[changed][:, changed] - torch.diag(jac[changed][:, changed].diagonal())
    assert off_diagonal.abs().max() == 0, "transformed features do not read each other"


def test_parameters_in_bfloat16_give_the_float32_spline_of_their_values() -> None:
    """Under CPU autocast a coupling network's output is bf16: the knots and log-determinants were computed in bf16,
    1-10% off per layer (flow_moons' training NLL 0.581 where float32 gives 0.528)."""
    torch.manual_seed(0)
    transform = SplineTransform(bins=8, bound=3.0, min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3)
    z = torch.randn(256, 2)
    params = torch.randn(256, transform.params_per_feature, 2).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, ladj = transform(z, params)
    y32, ladj32 = transform(z, params.float())
    assert y.dtype == ladj.dtype == torch.float32
    torch.testing.assert_close(y, y32, rtol=0, atol=0)
    torch.testing.assert_close(ladj, ladj32, rtol=0, atol=0)
