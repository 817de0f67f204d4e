"""Planar and radial flows: conformance, constraints under adversarial parameters, numerical inverse."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian

from compose_gen import make_catalogue
from compose_gen.testing.bijectors import check_type
from compose_gen_plugins.flows import planar
from compose_gen_plugins.flows.planar import Planar, Radial, constrained_u

CATALOGUE = make_catalogue([planar], entry_points=False)


@pytest.mark.parametrize("name", ["planar", "radial"])
def test_conformance(name: str) -> None:
    check_type(CATALOGUE, name, max_examples=5)


def _adversarial_planar(features: int = 3) -> Planar:
    """Raw ``u`` anti-aligned with ``w``: wᵀu = -20, so the unconstrained map would fold."""
    flow = Planar((features,)).double()
    with torch.no_grad():
        flow.w.copy_(torch.linspace(1.0, 2.0, features, dtype=torch.float64))
        flow.u.copy_(-20 * flow.w / flow.w.square().sum())
        flow.b.fill_(0.3)
    return flow


def test_planar_constraint_keeps_adversarial_parameters_invertible() -> None:
    flow = _adversarial_planar()
    raw_w_dot_u = flow.w @ flow.u
    assert raw_w_dot_u < -1, "the raw parameters violate wᵀu >= -1"
    u_hat, slack = constrained_u(flow.u, flow.w)
    torch.testing.assert_close(1 + flow.w @ u_hat, slack)
    torch.testing.assert_close(slack, F.softplus(raw_w_dot_u))
    assert slack > 0
    # Along w the map is a -> a + (wᵀû) tanh(a + b)·|w|²/|w|²: strictly increasing, so no fold anywhere.
    line = torch.linspace(-6, 6, 4001, dtype=torch.float64)[:, None] * flow.w / flow.w.norm()
    images, ladj = flow.inverse(line)
    assert torch.isfinite(ladj).all()
    assert ((images @ flow.w).diff() > 0).all()
    back, _ = flow(images)
    torch.testing.assert_close(back, line)


def _planar(w: list[float], u: list[float], b: float, dtype: torch.dtype = torch.float64) -> Planar:
    flow = Planar((len(w),)).to(dtype)
    with torch.no_grad():
        flow.w.copy_(torch.tensor(w))
        flow.u.copy_(torch.tensor(u))
        flow.b.fill_(b)
    return flow


def _autograd_ladj(flow: Planar, z: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.linalg.slogdet(jacobian(lambda t: flow.inverse(t[None])[0][0], row))[1] for row in z])


def test_a_planar_layer_with_w_zero_is_a_translation() -> None:
    """wᵀû is then 0, whatever u: the ladj used to be log(1 + m(0)) = -0.30 and the numerical inverse missed by 0.04."""
    flow = _planar([0.0, 0.0, 0.0], [0.3, -0.2, 0.1], 0.4)
    z = torch.randn(5, 3, dtype=torch.float64)
    x, ladj = flow.inverse(z)
    torch.testing.assert_close(x, z + torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64) * torch.tanh(torch.tensor(0.4)))
    assert (ladj == 0).all()
    back, forward_ladj = flow(x)
    torch.testing.assert_close(back, z)
    assert (forward_ladj == 0).all()


@pytest.mark.parametrize(("dtype", "w_dot_u"), [(torch.float32, -40.0), (torch.float64, -40.0), (torch.float64, -300.0)])
def test_a_planar_layer_next_to_folding_has_a_finite_log_determinant_and_gradients(dtype, w_dot_u) -> None:
    """wᵀû = softplus(wᵀu) - 1 rounds to -1 below wᵀu ≈ -17 (float32) or -37 (float64), where 1 + tanh'(0) wᵀû was
    computed as 0: ladj -inf, and NaN gradients.  It is softplus(wᵀu) itself, e^{wᵀu} there."""
    flow = _planar([1.0, 0.0, 0.0], [w_dot_u, 0.0, 0.0], 0.0, dtype)
    z = torch.tensor([[0.0, 1.0, 2.0], [0.5, 0.0, 0.0]], dtype=dtype, requires_grad=True)
    _, ladj = flow.inverse(z)
    torch.testing.assert_close(ladj[0], torch.tensor(w_dot_u, dtype=dtype))  # log(0 + 1 · e^{wᵀu}) at a = 0
    torch.testing.assert_close(ladj[1], _autograd_ladj(flow, z.detach())[1])
    ladj.sum().backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(flow.u.grad).all() and torch.isfinite(flow.w.grad).all()


def test_planar_numerical_forward_has_the_implicit_gradient() -> None:
    flow = _adversarial_planar()
    x = torch.randn(5, 3, dtype=torch.float64)
    z, _ = flow(x)
    # ∂z/∂x is the inverse of ∂x/∂z, as the implicit function theorem says.
    for i in range(len(x)):
        forward_jac = jacobian(lambda v: flow(v)[0], x[i])
        inverse_jac = jacobian(lambda v: flow.inverse(v)[0], z[i].detach())
        torch.testing.assert_close(forward_jac @ inverse_jac, torch.eye(3, dtype=torch.float64))
    # Parameter gradient of z = f⁻¹(x) against central differences.
    loss = lambda: flow(x)[0].square().sum()  # noqa: E731
    flow.zero_grad()
    loss().backward()
    for parameter in flow.parameters():
        numeric = torch.zeros_like(parameter)
        for index in range(parameter.numel()):
            with torch.no_grad():
                parameter.view(-1)[index] += 1e-6
                upper = loss()
                parameter.view(-1)[index] -= 2e-6
                lower = loss()
                parameter.view(-1)[index] += 1e-6
            numeric.view(-1)[index] = (upper - lower) / 2e-6
        torch.testing.assert_close(parameter.grad, numeric, atol=1e-6, rtol=1e-6)


def test_planar_forward_in_float32_and_far_from_the_plane() -> None:
    flow = _adversarial_planar().float()
    x = torch.tensor([[1e4, -3e3, 2.0], [0.0, 0.0, 0.0]])
    z, ladj = flow(x)
    back, inverse_ladj = flow.inverse(z)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(inverse_ladj, -ladj)


def test_radial_constraint_keeps_adversarial_parameters_invertible() -> None:
    flow = Radial((4,)).double()
    with torch.no_grad():
        flow.raw_alpha.fill_(-30.0)  # α ≈ 1e-13
        flow.raw_beta.fill_(-30.0)  # β ≈ -α: the edge of invertibility
    alpha, beta = flow._alpha_beta()
    assert alpha > 0 and beta > -alpha
    rays = torch.linspace(1e-6, 5, 2000, dtype=torch.float64)[:, None] * torch.tensor([1.0, -1.0, 0.5, 2.0]).double()
    images, ladj = flow.inverse(flow.center + rays)
    assert torch.isfinite(ladj).all()
    assert ((images - flow.center).norm(dim=-1).diff() > 0).all(), "the radius map r -> r(1 + βh) increases"


@pytest.mark.parametrize("scale", [1e-9, 1.0, 1e6])
def test_radial_inverse_is_accurate_near_and_far_from_the_centre(scale: float) -> None:
    flow = Radial((3,)).double()
    with torch.no_grad():
        flow.raw_alpha.fill_(0.5)
        flow.raw_beta.fill_(2.0)
    z = flow.center + scale * torch.randn(7, 3, dtype=torch.float64)
    x, ladj = flow.inverse(z)
    z_back, forward_ladj = flow(x)
    torch.testing.assert_close(z_back - flow.center, z - flow.center, rtol=1e-10, atol=0)
    torch.testing.assert_close(forward_ladj, -ladj)


def test_a_planar_layer_starts_as_the_identity_and_learns() -> None:
    """û = 0 at init, so a deep stack starts at the base density; u still gets a gradient, and after it w and b."""
    torch.manual_seed(0)
    layer = Planar((5,))
    x = torch.randn(7, 5)
    z, ladj = layer(x)
    torch.testing.assert_close(z, x)
    torch.testing.assert_close(ladj, torch.zeros(7))
    z.square().sum().backward()  # any loss of z: only u can move û off zero first
    assert layer.u.grad.abs().sum() > 0
