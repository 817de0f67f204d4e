"""``mode_coverage``: modes covered and the fraction of high-quality samples on 2D mixtures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

from compose_gen import ComponentType, EvalContext, Params, Splits, hookimpl
from compose_gen.core import MAX_DRAWS
from compose_gen_plugins.quality.shared import draw_samples, metric_type
from compose_gen_plugins.quality.statistics import mode_statistics, pairwise_distances

__all__ = ["ModeCoverageParams", "compose_gen_types", "mode_coverage"]


class ModeCoverageParams(Params):
    """Settings of ``mode_coverage``; the modes default to the dataset's ``meta``, in data space."""

    n: int = Field(2500, ge=1, le=MAX_DRAWS, description="samples drawn (VEEGAN uses 2500)")
    k: float = Field(3.0, gt=0, description="a sample is high quality within k standard deviations of its mode")
    min_fraction: float = Field(
        0.1, ge=0, le=1, description="a mode is covered with at least this fraction of its fair share n/modes"
    )
    modes: list[list[float]] | None = Field(None, description="mode centres (default: meta['modes'])")
    radii: list[float] | None = Field(None, description="ring radii around the origin (default: meta['radii'])")
    mode_std: float | None = Field(None, gt=0, description="the modes' std (default: meta['mode_std'])")
    plot: bool = Field(
        True, description="write mode_coverage.png: samples (their first two coordinates; 1-D data as a histogram), high quality in blue"
    )

    @model_validator(mode="after")
    def _one_kind_of_mode(self) -> "ModeCoverageParams":
        if self.modes is not None and self.radii is not None:
            raise ValueError("give either `modes` (points) or `radii` (rings), not both")
        return self


def mode_coverage(params: ModeCoverageParams, ectx: EvalContext) -> dict[str, float]:
    """Modes covered and high-quality fraction (Srivastava et al. 2017, VEEGAN; Metz et al. 2017).

    Samples are mapped to data space (``to_display``), where the dataset stores
    its modes: centres ``meta["modes"]`` (Gaussian mixtures) or ring radii
    ``meta["radii"]`` (rings, distance ``|‖x‖ − r|``), with ``meta["mode_std"]``.
    A sample is *high quality* within ``k·std`` (k = 3) of its nearest mode.  A
    mode is *covered* when at least ``max(1, ceil(min_fraction · n / modes))``
    high-quality samples are nearest to it: VEEGAN counts a mode once a single
    high-quality sample is, and the fair-share floor keeps a few stray samples
    from counting as a recovered mode.
    """
    train = ectx.data.train
    samples = train.to_display(draw_samples(ectx, params.n, "mode_coverage")).flatten(1).double()
    distances, std = _distances_to_modes(params, ectx, samples)
    high_quality, counts = mode_statistics(distances, std, params.k)
    needed = max(1, math.ceil(params.min_fraction * params.n / distances.shape[1]))
    if params.plot:
        _plot(samples, high_quality, Path(ectx.out_dir) / "mode_coverage.png")
    return {
        "modes_covered": float((counts >= needed).sum()),
        "modes_total": float(distances.shape[1]),
        "high_quality_fraction": float(high_quality.double().mean()),
    }


def _modes(params: ModeCoverageParams, data: Splits) -> tuple[Tensor | None, Tensor | None, float]:
    """The mode centres ``[modes, d]`` or ring radii ``[rings]`` (float64), and their std.

    From the metric's parameters, else the dataset's meta; refused unless they fit
    the data's examples in data space (``to_display``), where samples are compared.
    """
    meta = {**data.test.meta, **data.train.meta}
    explicit = params.modes is not None or params.radii is not None
    modes = params.modes if explicit else meta.get("modes")
    radii = params.radii if explicit else meta.get("radii")
    std = params.mode_std if params.mode_std is not None else meta.get("mode_std")
    if (modes is None and radii is None) or std is None:
        raise ValueError(
            "mode_coverage: the dataset stores no meta['modes'] or meta['radii'] with meta['mode_std'] "
            "(eight_gaussians, gaussian_grid and rings do); give `modes` or `radii`, and `mode_std`, "
            "in the metric's parameters"
        )
    if not float(std) > 0:  # a mode of spread 0 holds no sample within k·0 of it: 0 modes covered, for any model
        raise ValueError(
            f"mode_coverage: the modes' std is {float(std):g} (the dataset's noise: 0?), so no sample is within k·std of a "
            "mode and every model covers none; give `mode_std` > 0 in the metric's parameters, the spread you count as a hit"
        )
    if modes is not None:
        dims = data.train.to_display(data.train.fields["x"][:1]).flatten(1).shape[1]
        try:
            centres = torch.as_tensor(modes, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            centres = None
        if centres is None or centres.ndim != 2 or len(centres) == 0 or centres.shape[1] != dims:
            shape = "a ragged list" if centres is None else f"shape {tuple(centres.shape)}"
            raise ValueError(
                f"mode_coverage: the modes ({shape}) are not a list of points in the data's {dims} dimensions; "
                f"give `modes` as [[x1, ..., x{dims}], ...]"
            )
        return centres, None, float(std)
    rings = torch.as_tensor(radii, dtype=torch.float64).flatten()
    if len(rings) == 0:
        raise ValueError("mode_coverage: no ring radii; give at least one in `radii`")
    return None, rings, float(std)


def _check_modes(params: ModeCoverageParams, data: Splits) -> None:
    _modes(params, data)


def _distances_to_modes(params: ModeCoverageParams, ectx: EvalContext, samples: Tensor) -> tuple[Tensor, float]:
    centres, rings, std = _modes(params, ectx.data)
    if centres is not None:
        return pairwise_distances(samples, centres.to(samples.device)), std
    return (samples.norm(dim=1, keepdim=True) - rings.to(samples.device)).abs(), std


def _plot(samples: Tensor, high_quality: Tensor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points, good = samples.flatten(1)[:, :2].cpu().numpy(), high_quality.cpu().numpy()
    shown = np.isfinite(points).all(1)  # a diverged model's samples, inf in data space, have no place on the axes
    points, good = points[shown], good[shown]
    figure, axes = plt.subplots(figsize=(4, 4), dpi=100)
    if points.shape[1] == 1:  # points on a line: how many fall where, stacked by quality
        axes.hist([points[good, 0], points[~good, 0]], bins=100, stacked=True, color=["tab:blue", "tab:red"], label=["high quality", "other"])
    else:
        axes.scatter(points[good, 0], points[good, 1], s=2, c="tab:blue", label="high quality")
        axes.scatter(points[~good, 0], points[~good, 1], s=2, c="tab:red", label="other")
        axes.set_aspect("equal")
    axes.legend(loc="upper right", fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [metric_type("mode_coverage", ModeCoverageParams, mode_coverage, check=_check_modes)]
