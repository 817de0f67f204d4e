"""Two-domain datasets for image-to-image models (CycleGAN: Zhu et al., 2017).

Domain ``a`` is the ``x`` of a ``source`` dataset given inline; domain ``b`` is
``mapping(a)``: ``invert`` (``1 - a``, for sources in ``[0, 1]``), ``rotate90``
or ``transpose`` (of square images, or of points in the plane: a quarter turn
``(u, v) -> (-v, u)`` and the swap ``(u, v) -> (v, u)``).  ``paired`` keeps example ``i`` of ``b``
the image of example ``i`` of ``a`` (labels ``y``); ``unpaired`` shuffles ``b``
within each split with a seeded permutation (labels ``y_a`` and ``y_b``)::

    data: {type: unpaired, source: {type: digits, scale: true}, mapping: invert}

``two_sources`` takes each domain from a dataset of its own (horses and zebras,
say), which need only agree on the shape of an example, its log-determinant and, for
images, how a value is shown (``pixel_max``, ``scale``)::

    data: {type: two_sources, a: {type: npz, path: horses.npz}, b: {type: npz, path: zebras.npz}}

Each source's splits are kept.  A split of the smaller domain is repeated to the
other's size, each example in turn under a seeded shuffle (as CycleGAN's loader
draws the second domain at random), and domain b is shuffled when the two are of
one size too, so a batch pairs nothing.  The two-domain
``transforms:`` apply to both fields, fitted on both together, so one
``to_display`` (domain a's) shows either domain.  Sources are the dataset types
of this package (not two-domain ones).
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import torch
from pydantic import Field, create_model
from torch import Tensor

from compose_gen import BuildContext, ComponentType, Splits, TensorData, hookimpl
from compose_gen.core import ladj_field
from compose_gen_plugins.datasets import arrays, bundled, images, tables, toy
from compose_gen_plugins.datasets.base import (
    DatasetError,
    DataSpace,
    PipelineParams,
    make_splits,
    seeded_generator,
)

__all__ = ["compose_gen_types"]

#: The types a domain may come from: those of the package's other dataset modules, image sets included (CycleGAN's
#: domains are images), in this order (that of ``SourceSpec``'s members).  A new dataset module is named here too.
SOURCE_TYPES = {t.name: t for module in (toy, bundled, arrays, tables, images) for t in module.compose_gen_types()}

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


class TwoSourcesParams(PipelineParams):
    a: SourceSpec = Field(..., description="dataset whose x is domain a: {type: <dataset type>, ...its parameters}")
    b: SourceSpec = Field(..., description="dataset whose x is domain b, of examples shaped as a's")


def _check_source(source: TensorData) -> None:
    if ladj_field("x") in source.fields:
        raise DatasetError(
            "a two-domain source must not use logit (a per-example transform); put it in the two-domain transforms"
        )


def _half(source: TensorData, p: TwoDomainParams, split: str, paired: bool) -> dict[str, Tensor]:
    _check_source(source)
    a = source.fields["x"]
    b = _map(a, p.mapping, source.image_shape)
    y = source.fields.get("y")
    if paired:
        return {"a": a, "b": b} if y is None else {"a": a, "b": b, "y": y}
    order = torch.randperm(len(a), generator=seeded_generator(p.seed, f"unpaired/{split}"))
    if y is None:
        return {"a": a, "b": b[order]}
    return {"a": a, "b": b[order], "y_a": y, "y_b": y[order]}


def _space_of(source: TensorData) -> DataSpace:
    """What the two-domain data keep of (domain a's) source: its display, log-determinant and classes."""
    return DataSpace(
        image_shape=source.image_shape,
        base_display=source.to_display,
        ladj_to_model=source.ladj_to_model,
        num_classes=source.num_classes,
        meta=dict(source.meta),
    )


def _two_domain(p: TwoDomainParams, ctx: BuildContext | None, paired: bool) -> Splits:
    source = SOURCE_TYPES[p.source.type].build(p.source, ctx)
    space = _space_of(source.train)
    train = _half(source.train, p, "train", paired)
    test = _half(source.test, p, "test", paired)
    return make_splits(p, train, test, space, modelled=("a", "b"))


def build_paired(p: TwoDomainParams, ctx: BuildContext | None = None) -> Splits:
    """Aligned pairs ``(a_i, b_i = mapping(a_i))`` from a source dataset (Isola et al., 2017, "pix2pix" setting)."""
    return _two_domain(p, ctx, paired=True)


def build_unpaired(p: TwoDomainParams, ctx: BuildContext | None = None) -> Splits:
    """Domains ``a`` and ``b = mapping(a)`` independently shuffled, no pairs (Zhu et al., 2017, "CycleGAN")."""
    return _two_domain(p, ctx, paired=False)


def _as_large_as(fields: dict[str, Tensor], n: int, generator: torch.Generator, shuffle: bool = False) -> dict[str, Tensor]:
    """``fields`` repeated to ``n`` examples: each in turn, under a fresh shuffle per pass (as they are if already ``n``,
    unless ``shuffle``)."""
    m = len(next(iter(fields.values())))
    if m == n and not shuffle:
        return fields
    order = torch.cat([torch.randperm(m, generator=generator) for _ in range(-(-n // m))])[:n]
    return {k: v[order] for k, v in fields.items()}


def _joined_domains(a: TensorData, b: TensorData, p: TwoSourcesParams, split: str) -> dict[str, Tensor]:
    """Fields ``a``, ``b`` (and ``y_a``, ``y_b``) of one split, the smaller domain repeated to the other's size."""
    domains = {}
    for name, source in (("a", a), ("b", b)):
        _check_source(source)
        domains[name] = {name: source.fields["x"], **({f"y_{name}": source.fields["y"]} if "y" in source.fields else {})}
    n = max(len(a), len(b))
    generator = seeded_generator(p.seed, f"two_sources/{split}")
    # b is shuffled even at a's size: sources of one size in one order (moons and circles of one seed, a file made
    # from the other) would otherwise pair example i of a with example i of b, by class or one for one
    return {k: v for name in ("a", "b") for k, v in _as_large_as(domains[name], n, generator, shuffle=name == "b").items()}


def build_two_sources(p: TwoSourcesParams, ctx: BuildContext | None = None) -> Splits:
    """Domain ``a`` from one dataset, ``b`` from another, unpaired (Zhu et al., 2017, "CycleGAN")."""
    a, b = SOURCE_TYPES[p.a.type].build(p.a, ctx), SOURCE_TYPES[p.b.type].build(p.b, ctx)
    shapes = {name: tuple(s.train.fields["x"].shape[1:]) for name, s in (("a", a), ("b", b))}
    if shapes["a"] != shapes["b"]:
        raise DatasetError(f"the domains' examples must have one shape: a's are {shapes['a']}, b's {shapes['b']}")
    if abs(a.train.ladj_to_model - b.train.ladj_to_model) > 1e-6 * max(1.0, abs(a.train.ladj_to_model)):
        raise DatasetError(
            f"the sources map their values to model space differently (log-determinants {a.train.ladj_to_model:g} and "
            f"{b.train.ladj_to_model:g}): scale both alike, with the same `scale:` setting or in the two-domain `transforms:`"
        )
    if a.train.image_shape is not None and b.train.image_shape is not None:  # both pictures: one display must show both
        probe = torch.cat([a.train.fields["x"][:64], b.train.fields["x"][:64]])  # values of both domains, in model space
        shown = {name: source.train.to_display(probe).flatten() for name, source in (("a", a), ("b", b))}
        worst = int((shown["a"] - shown["b"]).abs().argmax())
        if abs(shown["a"][worst] - shown["b"][worst]) > 1e-4:
            raise DatasetError(
                f"the sources scale their values differently: the value {probe.flatten()[worst]:g} shows at brightness "
                f"{shown['a'][worst]:.3g} in a's pictures, {shown['b'][worst]:.3g} in b's (white is 1), and one picture shows "
                "either domain: scale both alike (the same `scale:` setting, or `pixel_max` for the one read from a file)"
            )
    space = _space_of(a.train)
    space.num_classes = None  # each domain has its own labels, y_a and y_b
    train, test = _joined_domains(a.train, b.train, p, "train"), _joined_domains(a.test, b.test, p, "test")
    return make_splits(p, train, test, space, modelled=("a", "b"))


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("paired", "dataset", TwoDomainParams, build_paired),
        ComponentType("unpaired", "dataset", TwoDomainParams, build_unpaired),
        ComponentType("two_sources", "dataset", TwoSourcesParams, build_two_sources),
    ]
