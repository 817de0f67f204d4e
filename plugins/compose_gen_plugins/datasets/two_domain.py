"""Two-domain datasets for image-to-image models (CycleGAN: Zhu et al., 2017).

Domain ``a`` is the ``x`` of a ``source`` dataset given inline; domain ``b`` is
``mapping(a)``: ``invert`` (``1 - a``, for sources in ``[0, 1]``), ``rotate90``
or ``transpose`` (of square images, or of points in the plane: a quarter turn
``(u, v) -> (-v, u)`` and the swap ``(u, v) -> (v, u)``).  ``paired`` keeps example ``i`` of ``b``
the image of example ``i`` of ``a`` (labels ``y``); ``unpaired`` shuffles ``b``
within each split with a seeded permutation (labels ``y_a`` and ``y_b``)::

    data: {type: unpaired, source: {type: digits, scale: true}, mapping: invert}

The source's splits are kept.  The two-domain ``transforms:`` apply to both
fields, fitted on both together, so one ``to_display`` shows either domain.
Sources are the dataset types of this package (not two-domain ones).
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import torch
from pydantic import Field, create_model
from torch import Tensor

from compose_gen import BuildContext, ComponentType, Splits, TensorData
from compose_gen_plugins.datasets.arrays import ARRAY_TYPES
from compose_gen_plugins.datasets.base import (
    DatasetError,
    DataSpace,
    PipelineParams,
    ladj_field,
    make_splits,
    seeded_generator,
)
from compose_gen_plugins.datasets.bundled import BUNDLED_TYPES
from compose_gen_plugins.datasets.images import IMAGE_TYPES
from compose_gen_plugins.datasets.tables import TABLE_TYPES
from compose_gen_plugins.datasets.toy import TOY_TYPES

__all__ = ["TWO_DOMAIN_TYPES"]

SOURCE_TYPES = {t.name: t for t in [*TOY_TYPES, *BUNDLED_TYPES, *ARRAY_TYPES, *TABLE_TYPES, *IMAGE_TYPES]}

_SOURCE_MODELS = tuple(
    create_model(f"{name}_source", __base__=t.params, type=(Literal[name], ...)) for name, t in SOURCE_TYPES.items()
)
#: A source dataset given inline: ``{type: <dataset type>, ...its parameters}``.
SourceSpec = Annotated[Union[_SOURCE_MODELS], Field(discriminator="type")]  # type: ignore[valid-type]


class TwoDomainParams(PipelineParams):
    source: SourceSpec = Field(..., description="dataset whose x is domain a: {type: <dataset type>, ...its parameters}")
    mapping: Literal["invert", "rotate90", "transpose"] = Field(
        "invert", description="how domain b is made from domain a: invert (1 - a), rotate90 or transpose (of images or 2-D points)"
    )


def _map(a: Tensor, mapping: str, image_shape: tuple[int, ...] | None) -> Tensor:
    if mapping == "invert":
        if a.min() < 0 or a.max() > 1:
            raise DatasetError(
                f"invert needs a source with values in [0, 1]; got [{a.min().item():g}, {a.max().item():g}] "
                "(e.g. digits with scale: true)"
            )
        return 1 - a
    if image_shape is None and a.shape[1:] == (2,):  # points in the plane: the same maps of the plane
        u, v = a.unbind(-1)
        return torch.stack([-v, u] if mapping == "rotate90" else [v, u], dim=-1)
    if image_shape is None or image_shape[-1] != image_shape[-2]:
        raise DatasetError(
            f"{mapping} needs a source of square images or of 2-D points; its image shape is {image_shape} "
            f"and its examples have shape {tuple(a.shape[1:])}"
        )
    images = a.reshape(len(a), *image_shape)
    moved = torch.rot90(images, 1, dims=(-2, -1)) if mapping == "rotate90" else images.transpose(-2, -1)
    return moved.reshape(a.shape)


def _half(source: TensorData, p: TwoDomainParams, split: str, paired: bool) -> dict[str, Tensor]:
    if ladj_field("x") in source.fields:
        raise DatasetError(
            "a two-domain source must not use logit (a per-example transform); put it in the two-domain transforms"
        )
    a = source.fields["x"]
    b = _map(a, p.mapping, source.image_shape)
    y = source.fields.get("y")
    if paired:
        return {"a": a, "b": b} if y is None else {"a": a, "b": b, "y": y}
    order = torch.randperm(len(a), generator=seeded_generator(p.seed, f"unpaired/{split}"))
    if y is None:
        return {"a": a, "b": b[order]}
    return {"a": a, "b": b[order], "y_a": y, "y_b": y[order]}


def _two_domain(p: TwoDomainParams, ctx: BuildContext | None, paired: bool) -> Splits:
    source = SOURCE_TYPES[p.source.type].build(p.source, ctx)
    space = DataSpace(
        image_shape=source.train.image_shape,
        base_display=source.train.to_display,
        ladj_to_model=source.train.ladj_to_model,
        num_classes=source.train.num_classes,
        meta=dict(source.train.meta),
    )
    train = _half(source.train, p, "train", paired)
    test = _half(source.test, p, "test", paired)
    return make_splits(p, train, test, space, modelled=("a", "b"))


def build_paired(p: TwoDomainParams, ctx: BuildContext | None = None) -> Splits:
    """Aligned pairs ``(a_i, b_i = mapping(a_i))`` from a source dataset (Isola et al., 2017, "pix2pix" setting)."""
    return _two_domain(p, ctx, paired=True)


def build_unpaired(p: TwoDomainParams, ctx: BuildContext | None = None) -> Splits:
    """Domains ``a`` and ``b = mapping(a)`` independently shuffled, no pairs (Zhu et al., 2017, "CycleGAN")."""
    return _two_domain(p, ctx, paired=False)


TWO_DOMAIN_TYPES = [
    ComponentType("paired", "dataset", TwoDomainParams, build_paired),
    ComponentType("unpaired", "dataset", TwoDomainParams, build_unpaired),
]
