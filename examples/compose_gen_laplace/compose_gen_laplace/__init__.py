"""An example third-party plugin: a factorised Laplace prior for VAEs.

Copy this package as the template for your own plugin:

1. declare the parameters as a ``compose_gen.Params`` model;
2. write a ``build(params, ctx)`` function returning the module;
3. return a ``ComponentType`` from a ``@hookimpl`` ``compose_gen_types()``;
4. name the module in ``[project.entry-points.compose_gen]`` of your pyproject.

After ``pip install -e examples/compose_gen_laplace`` the type appears in
``compose-gen plugins`` and specs can say ``{type: laplace, shape: [16]}``.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Laplace

from compose_gen import BuildContext, ComponentType, Params, draw_count, hookimpl

__all__ = ["LaplacePrior"]


class LaplacePrior(nn.Module):
    """p(z) = ∏ Laplace(z_i; 0, b) = ∏ exp(-|z_i|/b) / 2b, a sparsity-inducing prior (e.g. Kingma & Welling 2014, App. B)."""

    graph_methods = ("sample", "rsample")

    def __init__(self, shape: tuple[int, ...], scale: float) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(shape))
        self.register_buffer("scale", torch.full(shape, scale))

    def forward(self, temperature: float = 1.0) -> Distribution:
        # unvalidated: at temperature 0 (`compose-gen sample --temperature 0`) the scale is 0 and draws are the mode
        return Independent(Laplace(self.loc, self.scale * temperature, validate_args=False), self.loc.dim())

    def rsample(self, like: Tensor | int, temperature: float = 1.0) -> Tensor:
        return self(temperature).rsample((draw_count(like),))

    def sample(self, like: Tensor | int, temperature: float = 1.0) -> Tensor:
        with torch.no_grad():
            return self.rsample(like, temperature)


class LaplaceParams(Params):
    shape: list[int] = Field(..., min_length=1, description="event shape of z")
    scale: float = Field(1.0, gt=0, description="scale b of every coordinate")


def build_laplace(p: LaplaceParams, ctx: BuildContext) -> LaplacePrior:
    """Factorised Laplace prior with location 0 and scale b."""
    return LaplacePrior(tuple(p.shape), p.scale)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [ComponentType("laplace", "prior", LaplaceParams, build_laplace)]
