"""Invertible residual blocks: Lipschitz bound, fixed-point inverse, implicit gradient, unbiased log-det."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from compose_gen import make_catalogue
from compose_gen.testing.bijectors import check_type
from compose_gen_plugins.flows import residual
from compose_gen_plugins.flows.residual import LipschitzLinear, LipSwish, ResidualBlock

CATALOGUE = make_catalogue([residual], entry_points=False)


def _block(features: int = 4, seed: int = 0, **options) -> ResidualBlock:  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    block = ResidualBlock((features,), [16, 16], **options).double()
    with torch.no_grad():  # weights far larger than c: the normalisation must act
        for parameter in block.parameters():
            parameter.mul_(3).add_(torch.randn_like(parameter))
    return block


def _layers(block: ResidualBlock) -> list[LipschitzLinear]:
    return [layer for layer in block.g if isinstance(layer, LipschitzLinear)]


def test_conformance() -> None:
    check_type(CATALOGUE, "residual", max_examples=4)


def test_lipschitz_constant_stays_below_one_while_training() -> None:
    block = _block(lipschitz=0.9)
    optimizer = torch.optim.Adam(block.parameters(), lr=0.05)
    x = torch.randn(64, 4, dtype=torch.float64)
    for _ in range(5):
        y, ladj = block(x)
        loss = y.square().sum() - 10 * ladj.sum()  # pushes the log-det up, i.e. Lip(g) up
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        block(x[:1])  # the next call re-estimates the spectral norms of the new weights
        for layer in _layers(block):
            assert torch.linalg.matrix_norm(layer.normalized_weight().detach(), 2) <= 0.9 * (1 + 1e-9)
        slopes = torch.stack([torch.linalg.matrix_norm(jacobian(block.g, point), 2) for point in x[:8]])
        assert (slopes < 0.9 + 1e-9).all()


def _turned(basis: torch.Tensor, angle: float) -> torch.Tensor:
    """``basis`` with its first two columns turned by ``angle`` in their plane."""
    turned = basis.clone()
    turned[:, 0] = math.cos(angle) * basis[:, 0] + math.sin(angle) * basis[:, 1]
    turned[:, 1] = -math.sin(angle) * basis[:, 0] + math.cos(angle) * basis[:, 1]
    return turned


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("start", ["first estimate", "warm start"])
def test_bound_holds_when_the_two_largest_singular_values_are_close(seed: int, start: str) -> None:
    # σ₂/σ₁ = 0.99: power iteration gains only ρ = 0.98 of its last step each iteration, so a step below the
    # tolerance is still far from the limit, and from a random start σ̂ first rests near σ₂ (stopping on a small
    # step left ‖W̃‖₂ at 0.93 for c = 0.9, in float32).  The warm start begins 1.2 rad off the new top pair.
    torch.manual_seed(seed)
    layer = LipschitzLinear(32, 32, lipschitz=0.9)
    left, _ = torch.linalg.qr(torch.randn(32, 32))
    right, _ = torch.linalg.qr(torch.randn(32, 32))
    singular_values = torch.diag(torch.cat([torch.tensor([3.0]), torch.linspace(2.97, 1.0, 31)]))
    with torch.no_grad():
        layer.weight.copy_(left @ singular_values @ right.T)
        if start == "warm start":
            layer.refresh()
            layer.weight.copy_(_turned(left, 1.2) @ singular_values @ _turned(right, 1.2).T)
    layer.refresh()
    norm = torch.linalg.matrix_norm(layer.normalized_weight().detach(), 2)
    assert norm <= 0.9 * (1 + 1e-3)


@pytest.mark.parametrize("raw_beta", [-5.0, 0.5, 5.0])
def test_lipswish_is_1_lipschitz_for_every_beta(raw_beta: float) -> None:
    activation = LipSwish()
    with torch.no_grad():
        activation.raw_beta.fill_(raw_beta)
    points = torch.linspace(-40, 40, 100001, dtype=torch.float64, requires_grad=True)
    (slopes,) = torch.autograd.grad(activation(points).sum(), points)
    assert slopes.abs().max() <= 1.0


def test_output_is_a_deterministic_function_of_the_state() -> None:
    block = _block()
    x = torch.randn(5, 4, dtype=torch.float64)
    y, _ = block(x)
    assert torch.equal(block(x)[0], y)
    block.eval()
    assert torch.equal(block(x)[0], y), "y does not depend on the mode"
    reloaded = ResidualBlock((4,), [16, 16]).double()
    reloaded.load_state_dict(block.state_dict())
    assert torch.equal(reloaded.eval()(x)[0], y)


@pytest.mark.parametrize("shared", [False, True])
def test_russian_roulette_estimate_is_unbiased(shared: bool) -> None:
    # g(x) = W2 tanh(W1 x) with orthogonal weights at the bound c = 0.7 and x near 0: Lip(g) ≈ 0.49 is reached,
    # so the series has large terms beyond the first (a missing 1/P(N >= k) reweighting is off by ~20 standard
    # errors) and its variance is finite (Lip² < 1 - p).
    torch.manual_seed(0)
    block = ResidualBlock((5,), [5], 0.7, "tanh", exact_dims=0, exact_terms=1, shared_roulette=shared).double()
    with torch.no_grad():
        for layer in _layers(block):
            layer.weight.copy_(2 * torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))[0])
            layer.bias.zero_()
    x = 0.05 * torch.randn(3, 5, dtype=torch.float64)
    _, exact = block.eval()(x)
    block.train()
    calls, batch = 200, 64
    with torch.no_grad():
        estimates = torch.stack([block(x.expand(batch, 3, 5))[1].mean(0) for _ in range(calls)])  # (calls, 3)
    assert estimates.std(0).min() > 0, "the estimate is stochastic"
    # Call means are i.i.d. (with shared, the examples of one call share N): a z-test at 4.5 standard errors.
    standard_error = estimates.std(0) / math.sqrt(calls)
    assert ((estimates.mean(0) - exact).abs() <= 4.5 * standard_error).all(), (estimates.mean(0), exact)


def test_the_roulette_compiles_once_whatever_number_of_terms_it_draws() -> None:
    """The drawn term count stays outside the graph; traced, each new count recompiled up to dynamo's limit."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    block = ResidualBlock((6,), [8], exact_dims=0, roulette_p=0.3).train()
    compiled = torch.compile(block, backend="eager")
    x = torch.randn(16, 6)
    for _ in range(12):  # P(every draw of N the same) < 1e-6
        compiled(x)[1].sum().backward()
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])
    torch._dynamo.reset()


def test_exact_mode_matches_the_brute_force_log_determinant() -> None:
    block = _block(features=6, exact_dims=0).eval()
    x = torch.randn(4, 6, dtype=torch.float64)
    _, ladj = block(x)
    expected = torch.stack([torch.linalg.slogdet(jacobian(lambda v: block(v)[0], point)).logabsdet for point in x])
    torch.testing.assert_close(ladj, expected)


def test_inverse_has_the_implicit_gradient() -> None:
    block = _block().eval()
    x = torch.randn(6, 4, dtype=torch.float64)
    y, _ = block(x)
    inverse_jac = jacobian(lambda v: block.inverse(v)[0], y[0].detach())
    forward_jac = jacobian(lambda v: block(v)[0], x[0])
    torch.testing.assert_close(inverse_jac, torch.linalg.inv(forward_jac))
    # x = f⁻¹(f(x; θ); θ) does not depend on θ, so its parameter gradient vanishes only if both are exact.
    block.zero_grad()
    round_trip, _ = block.inverse(block(x)[0])
    round_trip.square().sum().backward()
    for name, parameter in block.named_parameters():
        torch.testing.assert_close(parameter.grad, torch.zeros_like(parameter), atol=1e-8, rtol=0, msg=name)


def _round_trip_of_a_small_example(batch_mate: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``inverse(forward(x))`` of x = [0.3, −0.2] next to ``[batch_mate] * 2`` (float32, sharp weights), and the
    implicit gradient of its first value towards y, the batch-mate's incoming gradient ``batch_mate`` times larger."""
    torch.manual_seed(0)
    block = ResidualBlock((2,), [16], lipschitz=0.9, activation="tanh").eval()
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.mul_(5)
    x = torch.tensor([[0.3, -0.2], [batch_mate, batch_mate]])
    y = block(x)[0].detach().requires_grad_()
    back = block.inverse(y)[0]
    back.backward(torch.tensor([[1.0, 0.0], [max(batch_mate, 1.0), 0.0]]))
    return back[0].detach(), y.grad[0]


@pytest.mark.parametrize("batch_mate", [1e3, 1e5, 1e7])
def test_an_example_is_inverted_as_accurately_whatever_its_batch_mates(batch_mate: float) -> None:
    """The stopping rule scaled the tolerance by the largest |y| of the whole batch: next to a batch-mate of 1e7 a small
    example's float32 round trip was 0.04 off (5e-7 alone), and its implicit gradient likewise."""
    alone, gradient_alone = _round_trip_of_a_small_example(0.0)
    assert (alone - torch.tensor([0.3, -0.2])).abs().max() < 1e-6
    beside, gradient_beside = _round_trip_of_a_small_example(batch_mate)
    torch.testing.assert_close(beside, alone, atol=1e-6, rtol=0)
    torch.testing.assert_close(gradient_beside, gradient_alone, atol=1e-6, rtol=1e-6)


def test_inverse_that_cannot_converge_says_so() -> None:
    block = _block(max_iterations=2)
    with pytest.raises(RuntimeError, match="did not reach tolerance"):
        block.inverse(torch.randn(3, 4, dtype=torch.float64))


def test_a_roulette_whose_variance_is_infinite_is_warned_of() -> None:
    """Σ_k Lip^{2k}/(1 − p)^k diverges when Lip(g)² ≥ 1 − p: an unbiased estimate whose variance has no bound."""
    import warnings

    from compose_gen import SpecWarning

    residual = CATALOGUE.get("residual")

    def built(**params: object) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            residual.build(residual.params(shape=[64], hidden=[8], **params), None)
        return [str(w.message) for w in caught if issubclass(w.category, SpecWarning)]

    (said,) = built(lipschitz=0.9, roulette_p=0.5)
    assert "variance is finite only when lipschitz² < 1 − roulette_p (0.81 ≥ 0.5): set roulette_p below 0.19" in said
    assert built() == [], "the defaults keep the variance finite (a run folder records the values it trained with)"
    assert built(lipschitz=0.7, roulette_p=0.5) == [] and built(roulette_p=0.15) == []
    assert built(lipschitz=0.9, roulette_p=0.5, exact_dims=64) == [], "no estimate: the log-determinant is exact"
