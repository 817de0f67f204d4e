"""MADE, MAF and IAF: conformance, the autoregressive property, and which direction is fast."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from compose_gen import make_catalogue
from compose_gen.testing.bijectors import check_type
from compose_gen_plugins.flows import autoregressive
from compose_gen_plugins.flows.autoregressive import MADE, AutoregressiveParams, build_iaf, build_maf

CATALOGUE = make_catalogue([autoregressive], entry_points=False)


def _perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """float64, with every parameter moved off its (partly zero) initialisation."""
    generator = torch.Generator().manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return module


@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_conformance(name: str) -> None:
    check_type(CATALOGUE, name, max_examples=4)


@pytest.mark.parametrize("order", ["natural", "random"])
@pytest.mark.parametrize("hidden", [[], [7], [9, 6]])
def test_made_output_d_depends_exactly_on_earlier_inputs(order: str, hidden: list[int]) -> None:
    features, context_features = 5, 2
    made = _perturbed(MADE(features, hidden, 3, context_features, order, seed=4, activation="tanh"))
    x, context = torch.randn(features, dtype=torch.float64), torch.randn(context_features, dtype=torch.float64)
    d_x, d_context = jacobian(lambda a, c: made(a, c), (x, context))  # (3, D, D), (3, D, C)
    degree = made.ordering
    allowed = degree[None, :] < degree[:, None]  # output d may read input j iff m(j) < m(d)
    assert d_x[:, ~allowed].abs().max() == 0
    assert (d_x[:, allowed].abs() > 0).all(), "the masks cut no connection the ordering allows"
    assert (d_context.abs() > 0).any(dim=(0, 2)).all(), "every output reads the context"


@pytest.mark.parametrize("build", [build_maf, build_iaf])
def test_jacobian_is_triangular_in_the_ordering(build) -> None:  # type: ignore[no-untyped-def]
    params = AutoregressiveParams(shape=[6], hidden=[12, 12], order="random", seed=2, activation="tanh")
    bijector = _perturbed(build(params, None))
    x = torch.randn(6, dtype=torch.float64)
    jac = jacobian(lambda v: bijector(v)[0], x)
    order = bijector.made.ordering.argsort()  # dimensions sorted by degree
    in_order = jac[order][:, order]
    assert torch.triu(in_order, diagonal=1).abs().max() == 0
    below = torch.ones(6, 6).tril(diagonal=-1).bool()
    assert (in_order[below].abs() > 0).all(), "each dimension depends on every earlier one"
    _, ladj = bijector(x)
    torch.testing.assert_close(ladj, in_order.diagonal().abs().log().sum())


def _made_passes(bijector: torch.nn.Module, method: str, value: torch.Tensor) -> int:
    calls = []
    handle = bijector.made.register_forward_hook(lambda *args: calls.append(1))
    getattr(bijector, method)(value)
    handle.remove()
    return len(calls)


def test_maf_is_fast_forward_and_iaf_fast_inverse() -> None:
    params = AutoregressiveParams(shape=[5], hidden=[8])
    maf, iaf = build_maf(params, None), build_iaf(params, None)
    value = torch.randn(3, 5)
    assert (maf.fast, iaf.fast) == ("forward", "inverse")
    assert (_made_passes(maf, "forward", value), _made_passes(maf, "inverse", value)) == (1, 5)
    assert (_made_passes(iaf, "forward", value), _made_passes(iaf, "inverse", value)) == (5, 1)


def test_iaf_is_maf_with_directions_swapped() -> None:
    params = AutoregressiveParams(shape=[4], hidden=[10], context_features=2)
    maf = _perturbed(build_maf(params, None))
    iaf = build_iaf(params, None).double()
    iaf.load_state_dict(maf.state_dict())
    value, context = torch.randn(7, 4, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64)
    for mine, theirs in ((iaf.inverse, maf.forward), (iaf.forward, maf.inverse)):
        out, ladj = mine(value, context)
        expected, expected_ladj = theirs(value, context)
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(ladj, expected_ladj)


def test_starts_as_identity() -> None:
    bijector = build_maf(AutoregressiveParams(shape=[2, 3], hidden=[8]), None)
    x = torch.randn(4, 2, 3)
    y, ladj = bijector(x)
    assert torch.equal(y, x) and torch.equal(ladj, torch.zeros(4))


def test_context_is_used_broadcast_and_checked() -> None:
    bijector = _perturbed(build_maf(AutoregressiveParams(shape=[3], hidden=[8], context_features=2), None))
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    context = torch.randn(5, 2, dtype=torch.float64)  # broadcasts over the leading sample dimension
    y, _ = bijector(x, context)
    assert not torch.allclose(y, bijector(x, context + 1)[0])
    x_back, _ = bijector.inverse(y, context)
    torch.testing.assert_close(x_back, x)
    with pytest.raises(ValueError, match="needs a context of 2 features"):
        bijector(x)
    with pytest.raises(ValueError, match="expects a context of 2 features"):
        bijector(x, torch.randn(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="does not broadcast"):
        bijector(x, torch.randn(3, 2, dtype=torch.float64))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_scale_is_bounded_for_any_network_output(sign: float) -> None:
    """s = s̃ / (1 + |s̃|/b): each log-scale lies in (-b, b) and tends to ±b, so |ladj| tends to D·b from below."""
    bijector = build_maf(AutoregressiveParams(shape=[3], hidden=[4], scale_bound=2.0), None)
    with torch.no_grad():
        bijector.made.net[-1].bias.fill_(sign * 1e6)
    y, ladj = bijector(torch.randn(5, 3))
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all() and (ladj.abs() <= 3 * 2.0).all()
    torch.testing.assert_close(ladj, torch.full((5,), sign * 3 * 2.0), atol=1e-4, rtol=0)  # at the bound, not short of it


@pytest.mark.parametrize(("build", "sequential"), [(build_maf, "inverse"), (build_iaf, "forward")])
def test_torch_compile_does_not_unroll_the_d_pass_direction(build, sequential: str) -> None:
    """Unrolled, an IAF's density takes D MADE passes into one graph: iaf_digits' 128 took 87 s to compile."""
    from torch._dynamo.testing import CompileCounter

    def traced_ops(features: int) -> int:
        torch._dynamo.reset()
        counter = CompileCounter()
        bijector = build(AutoregressiveParams(shape=[features], hidden=[8]), None)
        torch.compile(lambda x: getattr(bijector, sequential)(x)[1].sum(), backend=counter)(torch.randn(3, features))
        return counter.op_count

    assert traced_ops(4) == traced_ops(16)

