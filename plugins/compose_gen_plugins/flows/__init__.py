"""Normalizing flows: bijectors, the flow distribution, its NLL loss and sampler.

Each submodule is a plugin of its own (it implements ``compose_gen_types``), so it
can be registered alone, e.g. ``make_catalogue([coupling], entry_points=False)``;
this package gathers all of them (:func:`compose_gen_plugins.package_types`) under one entry point::

    [project.entry-points.compose_gen]
    flows = "compose_gen_plugins.flows"

Conventions shared by the bijectors here (see :mod:`compose_gen.testing.bijectors`
for the ones every bijector follows):

* ``shape`` is the event shape a bijector acts on: ``[D]`` for vectors,
  ``[C, H, W]`` for images.  Channel-wise layers (actnorm, 1x1 convolution,
  permutations) act on the first event dimension: features or channels.
* ``context_features`` (conditional variants) is the size of a context vector with
  the batch shape of the input; such bijectors expose ``context_shape``.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from compose_gen import ComponentType, Size, hookimpl
from compose_gen_plugins import package_types

__all__ = ["EventShape", "compose_gen_types", "context_shape_of"]

#: Event shape parameter: ``[D]`` or ``[C, H, W]``.
EventShape = Annotated[list[Size], Field(min_length=1, max_length=3)]


def context_shape_of(module: nn.Module) -> torch.Size | None:
    """The context event shape that ``module`` or any of its submodules declares, if any."""
    shapes = {getattr(m, "context_shape", None) for m in module.modules()} - {None}
    if len(shapes) > 1:
        raise ValueError(f"parts of one flow expect different context shapes: {sorted(map(tuple, shapes))}")
    return shapes.pop() if shapes else None


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    """Every type of every flows submodule."""
    return package_types(__name__)
