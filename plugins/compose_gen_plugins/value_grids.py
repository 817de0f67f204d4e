"""Pictures of graph values: a grid with one row per named value on the same test examples.

For BiGAN, ``values: [x, reconstruction]`` shows x above G(E(x)); for CycleGAN,
``values: [a, ab, aba]`` shows a, its translation G_ab(a) and the cycle G_ba(G_ab(a)).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from compose_gen import BuildContext, ComponentType, EvalContext, Params, Value, hookimpl
from compose_gen.core import batches
from compose_gen.runtime.images import save_grid

__all__ = ["ValueGrid"]


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

    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        test = ctx.test
        if test.image_shape is None:
            raise ValueError(f"value_grid: the data are not images, so {self.names} cannot be tiled")
        torch.manual_seed(ctx.seed)
        batch = next(iter(batches(test, self.n, ctx.device)))
        computed = ctx.model.values(batch, self.names)
        rows = []
        for name in self.names:
            value = computed[name]
            if not isinstance(value, torch.Tensor) or value[0].numel() != math.prod(test.image_shape):
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"value_grid: value {name!r} of shape {shape} is not an image of shape {tuple(test.image_shape)}")
            rows.append(test.to_display(value).reshape(len(value), *test.image_shape))
        path = save_grid(torch.cat(rows), Path(ctx.out_dir) / self.file, nrow=len(rows[0]))
        return {f"{path.stem}_images": float(len(rows) * len(rows[0]))}


def build_value_grid(params: ValueGridParams, ctx: BuildContext) -> Any:
    return ValueGrid(params)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [ComponentType("value_grid", "metric", ValueGridParams, build_value_grid, doc=ValueGrid.__doc__ or "")]
