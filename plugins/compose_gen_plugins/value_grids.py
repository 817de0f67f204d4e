"""Pictures of graph values, and of a generator along paths in its noise space.

* ``value_grid``: one row per named value on the same test examples.  For BiGAN,
  ``values: [x, reconstruction]`` shows x above G(E(x)); for CycleGAN,
  ``values: [a, ab, aba]`` shows a, its translation G_ab(a) and the cycle G_ba(G_ab(a)).
* ``value_scatter``: the same for 2D points, one colour per named value; for a
  CycleGAN between point sets, ``values: [b, ab, a]`` shows where G_ab takes a
  against the b it should reach.
* ``noise_interpolation``: G along linear or spherical paths between noise draws
  (White 2016), the classic check that a generator is smooth rather than memorising.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from pydantic import Field

from compose_gen import BuildContext, ComponentType, EvalContext, Params, Ref, Splits, TensorData, Value, hookimpl
from compose_gen.core import MAX_DRAWS, batches, describe_value, save_grid, save_point_sets
from compose_gen_plugins.latent.grids import PathParams, interpolate, require_images
from compose_gen_plugins.sampling import ByClassParams, check_conditions

__all__ = ["ValueGrid", "ValueScatter"]


class ValueGridParams(Params):
    values: list[Value] = Field(..., min_length=1, description="graph values or batch fields, one row each")
    n: int = Field(10, ge=1, le=64, description="test examples (columns)")
    file: str = Field("values.png", pattern=r"^[A-Za-z0-9_.-]+\.png$", description="PNG written into the output folder")


class ValueGrid:
    """Tile the named graph values of the first ``n`` test examples row by row into one PNG.

    Every value must be an image batch of the data's image shape (model space, shown
    through the data's ``to_display``).  Returns ``{"<file stem>_images": count}``, so the
    evaluation summary records that the file was written.
    """

    def __init__(self, params: ValueGridParams) -> None:
        self.names, self.n, self.file = list(params.values), params.n, params.file

    def check_values(self, values: dict[str, Any], data: Splits) -> None:
        """Each named value is a batch of images of the data's shape (called by the dry run, so validate refuses it)."""
        for name in self.names:
            _images(name, values[name], data.test.image_shape)

    @torch.no_grad()
    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        test = ctx.test
        if test.image_shape is None:
            raise ValueError(f"value_grid: the data are not images, so {self.names} cannot be tiled")
        computed = values_of_test_examples(ctx, self.names, self.n)
        rows = [test.to_display(_images(name, computed[name], test.image_shape)).reshape(-1, *test.image_shape) for name in self.names]
        path = save_grid(torch.cat(rows), Path(ctx.out_dir) / self.file, nrow=len(rows[0]))
        return {f"{path.stem}_images": float(len(rows) * len(rows[0]))}


def _images(name: str, value: Any, image_shape: tuple[int, ...] | None) -> Tensor:
    """``value``, refused unless a batch of as many numbers per example as an image of ``image_shape`` holds."""
    if image_shape is not None and isinstance(value, Tensor) and value.dim() >= 1 and value[0].numel() == math.prod(image_shape):
        return value
    raise ValueError(f"reads {name!r}, {describe_value(value)}, not a batch of images of shape {tuple(image_shape or ())}")


def _points(name: str, value: Any) -> Tensor:
    """``value``, refused unless a batch of two numbers per example."""
    if isinstance(value, Tensor) and value.dim() >= 1 and value[0].numel() == 2:
        return value
    raise ValueError(f"reads {name!r}, {describe_value(value)}, not a batch of 2D points")


def build_value_grid(params: ValueGridParams, ctx: BuildContext) -> Any:
    """Tile named graph values (inputs, translations, reconstructions) of test examples into one PNG."""
    data = getattr(ctx, "data", None)
    if data is not None and data.test.image_shape is None:  # refused by validate, not after training
        raise ValueError(
            f"value_grid: the data are not images (the dataset has no image_shape), so {list(params.values)} cannot be tiled "
            "(value_scatter draws 2D points)"
        )
    return ValueGrid(params)


def values_of_test_examples(ctx: EvalContext, names: list[str], n: int) -> dict[str, Any]:
    """The graph values ``names`` of the first ``n`` test examples (a sampling value's noise seeded by the evaluation)."""
    torch.manual_seed(ctx.seed)
    return ctx.model.values(next(iter(batches(ctx.test, n, ctx.device))), names)


class ValueScatterParams(Params):
    values: list[Value] = Field(..., min_length=1, description="graph values or batch fields of 2D points, one colour each")
    n: int = Field(1000, ge=1, le=MAX_DRAWS, description="test examples drawn (all of them where the test split is smaller)")
    file: str = Field("values.png", pattern=r"^[A-Za-z0-9_.-]+\.png$", description="PNG written into the output folder")
    display: bool = Field(
        True, description="show the values as the data are shown (values in the data's space: x, G(x)); false: as they are (a 2D latent z)"
    )


class ValueScatter:
    """Draw the named graph values of the first ``n`` test examples as 2D points, one colour and legend entry each.

    Every value must hold two numbers per example: in the data's model space, shown
    through the data's ``to_display`` (``display``), or in a space of their own, such
    as a 2D latent, shown as they are.  Returns ``{"<file stem>_points": count}``.
    """

    def __init__(self, params: ValueScatterParams) -> None:
        self.names, self.n, self.file, self.display = list(params.values), params.n, params.file, params.display

    def check_values(self, values: dict[str, Any], data: Splits) -> None:
        """Each named value is a batch of 2D points, in the data's space when shown as the data are (called by the dry
        run, so validate refuses it)."""
        for name in self.names:
            self._shown(data.test, name, _points(name, values[name]))

    @torch.no_grad()
    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        computed = values_of_test_examples(ctx, self.names, self.n)
        sets = {name: self._shown(ctx.test, name, _points(name, computed[name])) for name in self.names}
        path = save_point_sets(sets, Path(ctx.out_dir) / self.file)
        return {f"{path.stem}_points": float(sum(len(points) for points in sets.values()))}

    def _shown(self, test: TensorData, name: str, value: Tensor) -> Tensor:
        if not self.display:
            return value.reshape(len(value), 2)
        try:
            return test.to_display(value).reshape(len(value), 2)
        except RuntimeError:  # the data's display takes other shapes: the value is not in the data's space
            raise ValueError(f"value_scatter: value {name!r} is not in the data's space, so the data's display cannot show it: set display: false") from None


def build_value_scatter(params: ValueScatterParams, ctx: BuildContext) -> ValueScatter:
    """Draw named graph values (inputs, translations, reconstructions) of test examples as 2D points."""
    data = getattr(ctx, "data", None)
    if params.display and data is not None and data.test.image_shape is not None:  # refused by validate, not after training
        raise ValueError(
            f"value_scatter: the data are images, so {list(params.values)} shown as the data are would not be 2D points "
            "(value_grid tiles images; display: false draws values of their own space, such as a 2D latent)"
        )
    return ValueScatter(params)


class NoiseInterpolationParams(ByClassParams, PathParams):
    noise: Ref("prior") = Field(..., description="noise prior p(z) the path ends are drawn from")  # type: ignore[valid-type]
    generator: Ref("generator", "network") = Field(..., description="generator G, called as G(z)")  # type: ignore[valid-type]
    pairs: int = Field(6, gt=0, description="rows: pairs of noise draws")


class NoiseInterpolation:
    """Write G(z_t) for z_t on paths between pairs of noise draws as ``interpolation_<mode>.png``.

    A conditional generator (``classes``) keeps one class along each row (row r: class
    r mod classes), so a row shows the noise's effect within a class; the generator gets
    the labels, or the graph value ``condition`` made from them as in training.
    """

    def __init__(self, noise: Any, generator: Any, params: NoiseInterpolationParams) -> None:
        self.noise, self.generator, self.params = noise, generator, params

    @torch.no_grad()
    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        p = self.params
        torch.manual_seed(ctx.seed)
        z = self.noise.sample(2 * p.pairs)
        path = interpolate(z[0::2], z[1::2], p.steps, p.mode).transpose(0, 1).reshape(-1, *z.shape[1:])
        if p.classes is None:
            drawn = self.generator(path)
        else:
            labels = (torch.arange(p.pairs, device=path.device) % p.classes).repeat_interleave(p.steps)
            condition = labels if p.condition is None else ctx.model.values({"y": labels}, [p.condition])[p.condition]
            drawn = self.generator(path, condition)
        images = ctx.test.to_display(drawn)
        save_grid(images.reshape(-1, *ctx.test.image_shape), Path(ctx.out_dir) / f"interpolation_{p.mode}.png", nrow=p.steps)
        return {f"interpolation_{p.mode}_images": float(len(path))}


def build_noise_interpolation(params: NoiseInterpolationParams, ctx: BuildContext) -> NoiseInterpolation:
    """Generator outputs along linear or spherical paths between noise draws (White 2016).

    Row r shows G(z_t) at ``steps`` points t = 0 … 1 between two draws a, b ~ p(z): linear z_t = (1 − t)a + tb, or
    spherical z_t = [sin((1 − t)Ω) a + sin(tΩ) b] / sin Ω with cos Ω = aᵀb / (‖a‖‖b‖), which keeps Gaussian noise at
    a typical norm (linear where sin Ω ≈ 0); a conditional generator keeps class r mod ``classes`` along row r.

    White 2016, "Sampling Generative Networks".
    """
    require_images(ctx, "noise_interpolation")
    generator = ctx.component(params.generator)
    check_conditions({"generator": generator}, params)
    return NoiseInterpolation(ctx.component(params.noise), generator, params)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("value_grid", "metric", ValueGridParams, build_value_grid),
        ComponentType("value_scatter", "metric", ValueScatterParams, build_value_scatter),
        ComponentType("noise_interpolation", "metric", NoiseInterpolationParams, build_noise_interpolation),
    ]
