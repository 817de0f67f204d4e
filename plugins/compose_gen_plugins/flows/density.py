r"""The ``density_plot`` metric: a 2D flow's density on a grid, drawn as ``density.png``.

The flow's :math:`\log p(x)` is evaluated at the centres of a ``grid × grid``
lattice of cells over a box ``[a_1, b_1] × [a_2, b_2]`` (the test data's range
padded by ``padding`` of its width on each side, or ``bounds``; both in model
space, after the dataset's ``transforms:``, where the flow's density lives), and the
midpoint rule gives the probability mass of the box:

.. math:: M = \sum_{ij} p(x_{ij})\,\Delta_1 \Delta_2 \;\approx\; \int_\text{box} p(x)\,dx \le 1.

A trained flow whose box covers the data has :math:`M \approx 1`; a mass well
above 1 means a density that does not normalise (a wrong log-determinant), well
below 1 means mass outside the data's range.  Its density is plotted beside a
2D histogram of the test data (as in Grathwohl et al. 2019, "FFJORD", and
Durkan et al. 2019, "Neural Spline Flows").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import Field, PositiveInt
from torch import Tensor

from compose_gen import BuildContext, ComponentType, EvalContext, Params, Ref, hookimpl
from compose_gen_plugins.flows.distribution import Flow

__all__ = ["DensityPlot", "DensityPlotParams", "build_density_plot", "grid_density"]


@torch.no_grad()
def grid_density(flow: Flow, bounds: Tensor, grid: int, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """The density ``p`` on cell centres, ``(grid, grid)`` indexed ``[x_2, x_1]``, and the cell area.

    ``bounds`` is ``(2, 2)``: rows are dimensions, columns ``(low, high)``.
    """
    low, high = bounds[:, 0], bounds[:, 1]
    width = (high - low) / grid
    steps = torch.arange(grid, dtype=bounds.dtype, device=bounds.device) + 0.5
    x1 = low[0] + width[0] * steps
    x2 = low[1] + width[1] * steps
    points = torch.stack(torch.meshgrid(x1, x2, indexing="xy"), dim=-1).reshape(-1, 2)
    log_p = torch.cat([flow.log_prob(part) for part in points.split(chunk)])
    return log_p.exp().reshape(grid, grid), width.prod()


def _plot(density: np.ndarray, data: np.ndarray, extent: list[float], mass: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 4), dpi=100)
    limits = [(extent[0], extent[1]), (extent[2], extent[3])]
    left.hist2d(data[:, 0], data[:, 1], bins=density.shape[0], range=limits, cmap="magma")
    right.imshow(density, origin="lower", extent=extent, cmap="magma", aspect="auto")
    for ax, title in ((left, "test data"), (right, f"flow density (mass {mass:.3f})")):
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
        ax.set_aspect("equal")
        ax.set_title(title)
        ax.set_xlabel("x[0], model space")  # where the density lives: after the data's transforms, unlike sample pictures
        ax.set_ylabel("x[1], model space")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


class DensityPlot:
    """Callable metric: writes ``density.png`` and returns ``test/<flow>.density_mass``."""

    def __init__(self, name: str, flow: Flow, grid: int, padding: float, bounds: list[list[float]] | None, x: str = "x") -> None:
        if flow.event_shape != torch.Size([2]):
            raise ValueError(f"density_plot: flow {name!r} has event shape {tuple(flow.event_shape)}; it needs [2]")
        if flow.context_shape is not None:
            raise ValueError(f"density_plot: flow {name!r} is conditional; only unconditional flows can be plotted")
        self.name, self.flow, self.grid, self.padding, self.bounds, self.x = name, flow, grid, padding, bounds, x

    def box(self, data: Tensor) -> Tensor:
        """``[[a_1, b_1], [a_2, b_2]]``: ``bounds``, or the range of ``data`` (n, 2) padded; refused when that range is flat."""
        if self.bounds is not None:
            return torch.tensor(self.bounds, dtype=data.dtype, device=data.device)
        low, high = data.min(0).values, data.max(0).values
        flat = (high - low <= 0).nonzero().flatten().tolist()
        if flat:
            raise ValueError(
                f"density_plot: all {len(data)} test example(s) have {self.x}[{flat[0]}] = {float(low[flat[0]]):g}, so their "
                "range spans no box to integrate the density over; give `bounds: [[low_1, high_1], [low_2, high_2]]`"
            )
        pad = self.padding * (high - low)
        return torch.stack([low - pad, high + pad], dim=1)

    @torch.no_grad()
    def __call__(self, ectx: EvalContext) -> dict[str, float]:
        dtype = next(self.flow.parameters(), torch.empty(0)).dtype
        data = ectx.test.fields[self.x].to(ectx.device, dtype).flatten(1)
        box = self.box(data)
        density, area = grid_density(self.flow, box, self.grid)
        mass = float((density.sum() * area).item())
        extent = box.flatten().tolist()
        _plot(density.cpu().double().numpy(), data.cpu().double().numpy(), extent, mass, Path(ectx.out_dir) / "density.png")
        return {f"test/{self.name}.density_mass": mass}


class DensityPlotParams(Params):
    """Plot a 2D flow's density on a grid over the test data's range; report the grid's probability mass."""

    flow: Ref("flow") = Field("flow", description="unconditional flow of event shape [2] to plot")  # type: ignore[valid-type]
    grid: PositiveInt = Field(200, ge=2, le=4096, description="cells per side (at most 4096: 16.8 million density evaluations)")
    padding: float = Field(0.1, ge=0, description="box = data range widened by this fraction of its width per side")
    bounds: list[list[float]] | None = Field(
        None, description="explicit box [[low_1, high_1], [low_2, high_2]] instead of the data's range, in model space (after the "
        "dataset's transforms:, where the flow's density lives)"
    )
    x: str = Field("x", description="the data field the flow models, drawn under its density (b of two domains)")


def build_density_plot(params: DensityPlotParams, ctx: BuildContext) -> DensityPlot:
    """PNG of a 2D flow's density on a grid; returns the grid's probability mass (≈ 1).

    M = Σ_ij p(x_ij) Δ₁Δ₂ ≈ ∫_box p(x) dx ≤ 1 (midpoint rule), x_ij the cell centres of a grid × grid lattice over the
    box: the test data's range padded by ``padding`` of its width per side, or ``bounds``, in model space.  M ≈ 1 when
    the box covers the data; M well above 1 is a density that does not normalise (a wrong log-determinant).

    Grathwohl et al. 2019, "FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative Models", and
    Durkan et al. 2019, "Neural Spline Flows" (such plots beside the data's histogram).
    """
    if params.bounds is not None and (
        len(params.bounds) != 2 or any(len(b) != 2 or not b[0] < b[1] for b in params.bounds)
    ):
        raise ValueError(f"density_plot: bounds must be [[low_1, high_1], [low_2, high_2]] with low < high, got {params.bounds}")
    data = getattr(ctx, "data", None)
    if data is not None and params.x not in data.test.fields:
        raise ValueError(f"density_plot: the data have no field {params.x!r} (they have {', '.join(data.test.fields)}): set x")
    name = params.flow if isinstance(params.flow, str) else "flow"
    metric = DensityPlot(name, ctx.component(params.flow), params.grid, params.padding, params.bounds, params.x)
    if data is not None:
        metric.box(data.test.fields[params.x].flatten(1))  # a flat range is refused at validate, not after training
    return metric


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [ComponentType("density_plot", "metric", DensityPlotParams, build_density_plot)]
