"""density_plot: the grid mass is the integral of the flow's density, and the PNG is written."""

from __future__ import annotations

import math

import pytest
import torch

from compose_gen import EvalContext, Splits, TensorData
from compose_gen_plugins.distributions import StandardNormal
from compose_gen_plugins.flows.density import DensityPlotParams, build_density_plot, grid_density
from compose_gen_plugins.flows.distribution import Flow, chain_of
from compose_gen_plugins.flows.elementwise import ElementwiseAffine


class Context:
    def __init__(self, **components) -> None:
        self.data, self.components = None, components

    def component(self, ref):
        return self.components[ref]


def affine_flow(log_scale: float, shift: float, dtype=torch.float64) -> Flow:
    """The flow whose data -> noise map is y = x·e^s + b: x ~ N(-b·e^{-s}, e^{-2s} I)."""
    bijector = ElementwiseAffine([2])
    with torch.no_grad():
        bijector.log_scale.fill_(log_scale)
        bijector.shift.fill_(shift)
    return Flow(StandardNormal([2]), chain_of([bijector])).to(dtype)


def splits(x: torch.Tensor) -> Splits:
    return Splits(train=TensorData(fields={"x": x}), test=TensorData(fields={"x": x}))


def test_standard_normal_mass_is_one_on_a_wide_grid(tmp_path) -> None:
    flow = affine_flow(0.0, 0.0)
    metric = build_density_plot(DensityPlotParams(grid=120, bounds=[[-7, 7], [-7, 7]]), Context(flow=flow))
    result = metric(EvalContext(model=None, data=splits(torch.randn(50, 2, dtype=torch.float64)), device=torch.device("cpu"), out_dir=tmp_path))
    assert result["test/flow.density_mass"] == pytest.approx(1.0, abs=1e-3)
    assert (tmp_path / "density.png").stat().st_size > 1000


def test_mass_of_a_narrow_box_is_the_gaussian_probability_and_the_log_det_counts() -> None:
    # y = x·e^s + b maps data to noise, so x ~ N(-b·e^{-s}, e^{-2s}); on [μ-σ, μ+σ]² the mass is erf(1/√2)².
    s, b = math.log(2.0), 1.0
    sigma, mu = math.exp(-s), -b * math.exp(-s)
    box = torch.tensor([[mu - sigma, mu + sigma]] * 2, dtype=torch.float64)
    density, area = grid_density(affine_flow(s, b), box, grid=200)
    assert float(density.sum() * area) == pytest.approx(math.erf(1 / math.sqrt(2)) ** 2, rel=1e-4)


def test_the_grid_holds_the_density_at_cell_centres_indexed_by_x2_then_x1() -> None:
    """Cell [i, j] of a box [a₁, b₁] × [a₂, b₂] is p at (a₁ + (j + ½)Δ₁, a₂ + (i + ½)Δ₂): the midpoint rule."""
    flow = affine_flow(math.log(2.0), 1.0)
    box = torch.tensor([[-1.0, 2.0], [0.0, 1.0]], dtype=torch.float64)
    density, area = grid_density(flow, box, grid=3)
    centres_1, centres_2 = torch.tensor([-0.5, 0.5, 1.5]), torch.tensor([1 / 6, 0.5, 5 / 6])
    points = torch.stack(torch.meshgrid(centres_2, centres_1, indexing="ij")[::-1], -1).double()
    torch.testing.assert_close(density, flow.log_prob(points.reshape(-1, 2)).exp().reshape(3, 3))
    assert float(area) == pytest.approx(1.0 * 1 / 3)


def test_data_range_box_covers_the_data_and_a_wrong_density_shows_up(tmp_path) -> None:
    flow = affine_flow(0.0, 0.0)
    data = splits(torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    ectx = EvalContext(model=None, data=data, device=torch.device("cpu"), out_dir=tmp_path)
    mass = build_density_plot(DensityPlotParams(grid=100), Context(flow=flow))(ectx)["test/flow.density_mass"]
    assert 0.99 < mass <= 1.0
    # A flow that forgets its log-determinant (density of z, not of x) no longer integrates to 1.
    flow.transform.forward = lambda x, context=None: (2 * x, torch.zeros(x.shape[:-1], dtype=x.dtype))
    wrong = build_density_plot(DensityPlotParams(grid=100), Context(flow=flow))(ectx)["test/flow.density_mass"]
    assert wrong < 0.5


def test_rejects_flows_that_are_not_2d_and_bad_bounds() -> None:
    flow3 = Flow(StandardNormal([3]), chain_of([ElementwiseAffine([3])]))
    with pytest.raises(ValueError, match="event shape"):
        build_density_plot(DensityPlotParams(), Context(flow=flow3))
    with pytest.raises(ValueError, match="low < high"):
        build_density_plot(DensityPlotParams(bounds=[[1, 0], [0, 1]]), Context(flow=affine_flow(0, 0)))


def test_the_data_drawn_under_the_density_are_the_field_the_flow_models(tmp_path) -> None:
    """Two domains have fields a and b, no x: ``x: b`` draws b (the box spans b's range), and a missing field is refused at build."""
    a, b = torch.zeros(50, 2, dtype=torch.float64), torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    data = Splits(train=TensorData(fields={"a": a, "b": b}), test=TensorData(fields={"a": a, "b": b}))
    context = Context(flow=affine_flow(0.0, 0.0))
    context.data = data
    with pytest.raises(ValueError, match=r"density_plot: the data have no field 'x' \(they have a, b\): set x"):
        build_density_plot(DensityPlotParams(), context)
    metric = build_density_plot(DensityPlotParams(x="b", padding=0.0), context)
    mass = metric(EvalContext(model=None, data=data, device=torch.device("cpu"), out_dir=tmp_path))["test/flow.density_mass"]
    low, high = b.min(0).values, b.max(0).values
    exact = math.prod((torch.special.ndtr(high[i]) - torch.special.ndtr(low[i])).item() for i in range(2))
    assert mass == pytest.approx(exact, rel=2e-3)  # the box of b; a's (a point) would hold no mass


@pytest.mark.parametrize("x", [torch.tensor([[0.3, -2.0]]), torch.tensor([[0.3, -2.0], [0.5, -2.0], [0.1, -2.0]])], ids=["one", "flat"])
def test_a_test_split_whose_range_is_flat_is_refused_at_build_unless_bounds_are_given(x: torch.Tensor) -> None:
    """One example, or examples sharing a coordinate, span no box: its mass would read ≈ 0, as if the flow were broken."""
    context = Context(flow=affine_flow(0.0, 0.0))
    context.data = splits(x.double())
    with pytest.raises(ValueError, match=rf"all {len(x)} test example\(s\) have x\[\d\] = (0.3|-2), so .* give `bounds:"):
        build_density_plot(DensityPlotParams(), context)
    build_density_plot(DensityPlotParams(bounds=[[-1, 1], [-3, -1]]), context)
