"""Uniform dequantization: fills each bin uniformly, rounds back exactly, gives a valid likelihood bound, and is advised where missing."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch.autograd.functional import jacobian

import compose_gen as cg
from compose_gen import Chain, Splits, TensorData
from compose_gen.testing.bijectors import check_case
from compose_gen_plugins.flows.dequantize import DequantizeParams, UniformDequantization, build_dequantize
from compose_gen_plugins.flows.elementwise import ElementwiseAffine


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("levels", [1, 16, 255])
def test_round_trip_and_bins(dtype: torch.dtype, levels: int) -> None:
    layer = UniformDequantization((3, 4), levels)
    x = torch.randint(0, levels, (500, 3, 4)).to(dtype) / levels  # the levels k = 0..levels-1 of data in [0, 1)
    y, ladj = layer(x)
    assert y.dtype == dtype and torch.equal(ladj, torch.zeros(500, dtype=dtype))
    assert ((y >= x) & (y < x + 1 / levels)).all(), "y stays in the bin of x"
    back, inverse_ladj = layer.inverse(y)
    assert torch.equal(back * levels, torch.round(x * levels)) and torch.equal(inverse_ladj, torch.zeros_like(ladj))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_last_values_of_the_domain_dequantize_into_the_top_level(dtype: torch.dtype) -> None:
    """x·L rounds to L − 0.5 for the float below (L − 0.5)/L, and half to even that was level L, one past the top, so
    a flow scored a point of its domain as NaN (L = 6, 12, 20, 24 among others)."""
    for levels in range(2, 64):
        layer = UniformDequantization((1,), levels)
        top = torch.nextafter(torch.tensor((levels - 0.5) / levels, dtype=dtype), torch.tensor(0.0, dtype=dtype))
        assert layer.domain.check(top)
        y, _ = layer(top[None, None])
        assert ((levels - 1) / levels <= y).all() and (y < 1).all(), levels


def test_noise_is_uniform_on_the_bin() -> None:
    layer = UniformDequantization((1000,), 16)
    x = torch.zeros(50, 1000, dtype=torch.float64)
    noise = (layer(x)[0] * 16).flatten()  # u ~ U[0, 1): mean 1/2, variance 1/12
    n = noise.numel()
    assert abs(noise.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(noise.var().item() - 1 / 12) < 5 * math.sqrt(1 / 180 / n)  # Var of (u - 1/2)² is 1/180


def test_jacobian_is_the_identity() -> None:
    layer = UniformDequantization((4,), 16)
    x = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(jacobian(lambda v: layer(v)[0], x), torch.eye(4, dtype=torch.float64))


def test_likelihood_bound_in_data_space() -> None:
    """log P(k) - log L·... : E_u[log p((k+u)/L)] - log L <= log P(k) = log ∫_bin p, within the spread of log p."""
    model = torch.distributions.Normal(torch.tensor(0.3, dtype=torch.float64), 0.2)
    for levels in (4, 64):
        layer = UniformDequantization((1,), levels)
        k = torch.arange(0, round(0.9 * levels), dtype=torch.float64)  # from the grid's start (0) to mean + 3σ
        y, ladj = layer((k / levels)[:, None, None].expand(-1, 20000, 1))  # 20000 noise draws per value
        bound = (model.log_prob(y[..., 0]) + ladj).mean(-1) - math.log(levels)  # - D log L is ladj_to_model
        low, high = k / levels, (k + 1) / levels
        exact = torch.log(model.cdf(high) - model.cdf(low))
        assert (bound <= exact + 1e-3).all(), "a lower bound (up to Monte Carlo error)"
        on_bin = torch.stack([low, high, model.mean.clamp(low, high)])  # log p is concave: extremes are here
        spread = model.log_prob(on_bin).amax(0) - model.log_prob(on_bin).amin(0)
        assert (exact - bound <= spread + 1e-3).all(), "Jensen's gap is at most the spread of log p on the bin"


def _data(x: torch.Tensor, ladj_to_model: float) -> SimpleNamespace:
    part = TensorData({"x": x}, ladj_to_model=ladj_to_model)
    return SimpleNamespace(data=Splits(part, part))


def test_build_checks_levels_against_the_dataset() -> None:
    x = torch.randint(0, 16, (10, 4)).float() / 16
    params = DequantizeParams(shape=[4], levels=16)
    assert build_dequantize(params, _data(x, -4 * math.log(16))).levels == 16
    assert build_dequantize(params, SimpleNamespace(data=None)).levels == 16
    with pytest.raises(ValueError, match="ladj_to_model"):
        build_dequantize(params, _data(x, 0.0))
    with pytest.raises(ValueError, match="not multiples of 1/16"):
        build_dequantize(params, _data(x + 0.01, -4 * math.log(16)))


def test_build_refuses_data_beyond_the_grids_top_and_names_the_levels_they_take() -> None:
    """Digits 0..16 scaled by 1/16 under ``levels: 16``: (16 + u)/16 > 1 would only fail later, in a logit."""
    x = torch.arange(17).float().repeat(4, 1).T / 16
    with pytest.raises(ValueError, match=r"levels=16 .* reach k = 16, so \(k \+ u\)/16 leaves \[0, 1\)\. The data take 17 levels \(0\.\.16\): set `levels: 17`"):
        build_dequantize(DequantizeParams(shape=[4], levels=16), _data(x, -4 * math.log(16)))
    with pytest.raises(ValueError, match="reach k = -2"):
        build_dequantize(DequantizeParams(shape=[4], levels=16), _data(x - 2 / 16, -4 * math.log(16)))
    raw = torch.randint(0, 256, (10, 4)).float()  # levels 1: raw integers, scaled by a bijector after this one
    raw[0, 0] = 255
    with pytest.raises(ValueError, match=r"levels=256 takes data k/256 in \[0, 1\), but the data are integers up to 255, not yet scaled: scale them by 1/256 with `levels: 256` \(the dataset's `transforms: \[\.\.\., \{type: scale, a: 0\.00390625\}\]`\), or dequantize the integers themselves with `levels: 1`"):
        build_dequantize(DequantizeParams(shape=[4], levels=256), _data(raw, 0.0))
    assert build_dequantize(DequantizeParams(shape=[4], levels=1), _data(raw, 0.0)).levels == 1
    bits = (raw > 127).float()  # binarized: integers 0..1
    with pytest.raises(ValueError, match=r"integers up to 1, not yet scaled: scale them by 1/2 with `levels: 2`"):
        build_dequantize(DequantizeParams(shape=[4], levels=2), _data(bits, 0.0))
    assert build_dequantize(DequantizeParams(shape=[4], levels=2), _data(bits / 2, -4 * math.log(2))).levels == 2


def test_a_flow_dequantizes_binarized_data_with_the_bin_volume_counted_once() -> None:
    """binarize, then scale by 1/2: the dataset counts -D·log 2, which a dequantize head with levels 2 expects."""
    data = {"type": "digits", "shape": "flat", "transforms": ["binarize", {"type": "scale", "a": 0.5}]}
    flow = {"type": "flow", "base": {"type": "standard_normal", "shape": [64]}, "head": [{"type": "dequantize", "shape": [64], "levels": 2}],
            "bijectors": [{"type": "affine_coupling", "shape": [64], "hidden": [8]}]}
    spec = cg.load_spec({"name": "bits", "data": data, "components": {"flow": flow}, "losses": {"nll": {"type": "flow_nll", "flow": "flow"}}})
    model, splits = cg.build(spec, "cpu")
    assert splits.train.ladj_to_model == pytest.approx(-64 * math.log(2))



@pytest.mark.parametrize("head", [[], [{"type": "dequantize", "shape": [64], "levels": 17}]])
def test_a_flow_nll_on_discrete_data_warns_unless_the_flow_dequantizes(head: list) -> None:
    spec = cg.load_spec(
        {
            "name": "grey",
            "data": {"type": "digits", "shape": "flat", "scale": False, "transforms": [{"type": "scale", "a": 1 / 17}]},
            "components": {
                "flow": {
                    "type": "flow",
                    "base": {"type": "standard_normal", "shape": [64]},
                    "head": head,
                    "bijectors": [{"type": "additive_coupling", "shape": [64], "mask": "alternating", "hidden": [8]}],
                }
            },
            "losses": {"nll": {"type": "flow_nll", "flow": "flow"}},
        }
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cg.build(spec)
    said = [str(w.message) for w in caught if issubclass(w.category, cg.SpecWarning)]
    if head:
        assert said == []
    else:
        assert said == [
            "<dict>:1: losses.nll: type 'flow_nll' (plugin 'flows'): the data take only 17 distinct values (0..0.941176), so the density "
            "of flow 'flow' can grow without bound there: the NLL falls forever and bits/dim bound nothing; dequantize first, "
            "e.g. the flow's `head: [{type: dequantize, shape: [...], levels: L}]`"
        ]


def test_a_chain_holding_a_dequantization_passes_the_kit_as_a_surjection() -> None:
    """The chain did not say it projects, so the kit drew x off the grid and failed a right composite."""
    chain = Chain([UniformDequantization((3,), 16), ElementwiseAffine((3,))])
    assert chain.surjective
    check_case(chain, (4,), seed=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("draw", ["zero", "largest below one"])
def test_noise_at_the_ends_of_its_range_keeps_y_inside_the_unit_interval(monkeypatch, dtype: torch.dtype, draw: str) -> None:
    """torch.rand returns exactly 0 (about 5e-8 of float32 draws): level 0 then went to y = 0, and a logit with alpha 0
    after it to -inf, a NaN log-density; (16 + u)/17 rounds to 1 for u just below 1."""
    from compose_gen_plugins.flows.elementwise import Logit

    def rand_like(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x) if draw == "zero" else torch.full_like(x, 1 - torch.finfo(x.dtype).eps / 2)

    monkeypatch.setattr(torch, "rand_like", rand_like)
    levels = 17
    x = torch.arange(levels, dtype=dtype)[None] / levels
    y, _ = UniformDequantization((levels,), levels)(x)
    assert ((y > 0) & (y < 1)).all() and torch.equal(torch.floor(y * levels), torch.round(x * levels)), y
    z, ladj = Chain([UniformDequantization((levels,), levels), Logit((levels,), alpha=0.0)])(x)
    assert torch.isfinite(z).all() and torch.isfinite(ladj).all()
