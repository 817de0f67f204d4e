"""What every dataset type shares: parameters, seeded splits, the pipeline, display, errors.

A dataset type reads or generates its examples in *data space*, splits them
with :func:`split_fields` (or keeps a split its files define) and hands both
halves to :func:`make_splits`, which fits the ``transforms:`` pipeline on the
train half, applies it to both and fills in the :class:`TensorData` contract:

* ``ladj_to_model`` = the type's own constant (e.g. ``-D·log 16`` for digits
  scaled to ``[0, 1]``) + the pipeline's constant log-determinant;
* a per-example remainder, when a step has one (``logit``), in the field
  ``ladj_<name>`` (``ladj_x``; ``ladj_a``/``ladj_b`` for two domains), so that
  ``log p_data(raw_i) = log p_model(x_i) + ladj_to_model + ladj_x[i]`` for the
  stored (model-space) ``x_i``;
* ``to_display`` = the pipeline's inverse, then the type's own map to ``[0, 1]``
  pixels, reshaped to ``(*batch, C, H, W)`` and clamped, for image data;
* ``to_model`` = the type's own map from the values its files hold (``from_raw``:
  digits divided by 16, say), then the pipeline, for new examples (one modelled field).

Randomness comes from generators seeded by ``seed`` and a stream name, so a
split and its dequantization noise depend on the seed alone.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Mapping

import torch
from pydantic import Field
from torch import Tensor

from compose_gen import Params, Seed, SpecWarning, Splits, TensorData
from compose_gen.core import derive_seed, first_flagged, ladj_field
from compose_gen_plugins.datasets.transforms import Pipeline, PipelineError, TransformSpec, fit_pipeline

__all__ = [
    "DataSpace",
    "DatasetError",
    "DatasetParams",
    "Display",
    "ImageParams",
    "PipelineParams",
    "file_error",
    "make_splits",
    "seeded_generator",
    "split_fields",
]


class DatasetError(ValueError):
    """A dataset that cannot be built: a malformed file, a split that leaves a half empty."""


def file_error(path: Path | str, problem: str) -> DatasetError:
    """``"<path>: <problem>"``, the form of every file error."""
    return DatasetError(f"{path}: {problem}")


class PipelineParams(Params):
    """Parameters every dataset type accepts."""

    seed: Seed = Field(0, description="seeds everything random: the split, generated data, dequantization noise")
    transforms: list[TransformSpec] = Field(
        [], description="preprocessing steps from data space to model space, in order, fitted on train"
    )


class DatasetParams(PipelineParams):
    """Parameters of a dataset type that splits its examples itself."""

    test_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="share of the examples held out for test (ignored where files define it)"
    )


class ImageParams(DatasetParams):
    """Parameters of image datasets: ``x`` as ``(C, H, W)`` images or flat vectors."""

    shape: Literal["image", "flat"] = Field("image", description="x as (C, H, W) images or as flat vectors")


def seeded_generator(seed: int, stream: str) -> torch.Generator:
    """A CPU generator for one named use of ``seed``; streams are independent of each other."""
    return torch.Generator().manual_seed(derive_seed(seed, stream))


def split_fields(fields: Mapping[str, Tensor], params: DatasetParams) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Split every field with one seeded permutation; ``round(N·test_fraction)`` examples go to test."""
    n = len(next(iter(fields.values())))
    n_test = round(n * params.test_fraction)
    if not 0 < n_test < n:
        raise DatasetError(
            f"test_fraction {params.test_fraction} of {n} examples leaves an empty "
            f"{'test' if n_test == 0 else 'train'} split"
        )
    order = torch.randperm(n, generator=seeded_generator(params.seed, "split"))
    test, train = order[:n_test], order[n_test:]
    return {k: v[train] for k, v in fields.items()}, {k: v[test] for k, v in fields.items()}


@dataclass
class Display:
    """``to_display``: model space → data space (pipeline inverse) → ``base`` → ``[0, 1]`` images.

    ``base`` maps data space to display values (default: divide by
    ``pixel_max``).  Without ``image_shape`` the result stays in data space,
    e.g. 2D points for scatter plots.
    """

    pipeline: Pipeline
    image_shape: tuple[int, ...] | None = None
    pixel_max: float = 1.0
    base: Callable[[Tensor], Tensor] | None = None

    def __call__(self, x: Tensor) -> Tensor:
        x = self.pipeline.inverse(x)
        batch = x.shape[: x.dim() - len(self.pipeline.in_shape)]
        if self.image_shape is None:  # pixel_max says how a pixel shows: data that are no images stay in their units
            return x if self.base is None else self.base(x)
        x = self.base(x) if self.base is not None else x / self.pixel_max
        return x.reshape(*batch, *self.image_shape).clamp(0.0, 1.0)


@dataclass
class DataSpace:
    """What a type knows about its data space, beyond the fields.

    ``ladj_to_model`` is the type's own log-determinant from the values as read
    to the values it returns (e.g. ``-D·log 16`` for digits divided by 16).
    """

    image_shape: tuple[int, ...] | None = None
    pixel_max: float = 1.0
    base_display: Callable[[Tensor], Tensor] | None = None
    ladj_to_model: float = 0.0
    num_classes: int | None = None
    meta: dict[str, object] = field(default_factory=dict)
    #: The type's own map from the values its files hold to the values it returns (None: they are the same).
    from_raw: Callable[[Tensor], Tensor] | None = None
    #: Pixels: the files hold the whole numbers ``0..raw_levels - 1``, and so must new examples (None: any values).
    raw_levels: int | None = None


def own_ladj(space: DataSpace, pipeline: Pipeline) -> float:
    """The type's own log-determinant, unless the pipeline binarizes: then likelihoods are of the binary vectors."""
    return 0.0 if pipeline.binarizes else space.ladj_to_model


@dataclass
class ToModel:
    """``TensorData.to_model``: new examples from the values the files hold to model space, with their log-determinant."""

    pipeline: Pipeline
    space: DataSpace
    seed: int

    def __call__(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.as_tensor(raw, dtype=torch.float64)
        if self.space.raw_levels is not None and x.dim() > 0:
            _check_levels(x, self.space.raw_levels)
        x = self.space.from_raw(x) if self.space.from_raw is not None else x
        if x.dim() == 0 or x.shape[1:] != self.pipeline.in_shape:
            raise ValueError(
                f"new examples must have the shape of the data's, (N, {', '.join(map(str, self.pipeline.in_shape))}); "
                f"got {tuple(raw.shape)}"
            )
        y, constant, per_example = self.pipeline.apply(x, seeded_generator(self.seed, "transforms/new"))
        ladj = torch.full((len(x),), own_ladj(self.space, self.pipeline) + constant, dtype=torch.float64)
        return y.to(torch.float32), ladj + per_example if per_example is not None else ladj


def _check_levels(raw: Tensor, levels: int) -> None:
    """Raise unless ``raw`` holds whole numbers ``0..levels - 1``: a pixel off that grid is none the data could hold."""
    bad = (raw != raw.round()) | (raw < 0) | (raw > levels - 1)
    if bool(bad.any()):
        example, value = first_flagged(raw, bad)
        raise ValueError(
            f"new examples hold pixels as the dataset's files do, whole numbers 0..{levels - 1}; example {example} holds {value:g}"
        )


def make_splits(
    params: PipelineParams,
    train: dict[str, Tensor],
    test: dict[str, Tensor],
    space: DataSpace | None = None,
    *,
    modelled: tuple[str, ...] = ("x",),
) -> Splits:
    """Fit the pipeline on the train half of the ``modelled`` fields and build both halves.

    Several modelled fields (two domains) share one pipeline, fitted on all of
    them, so one ``to_display`` serves each.
    """
    info = space or DataSpace()
    raw_train, raw_test = train, test
    for name, half in (("train", train), ("test", test)):
        if len(next(iter(half.values()))) == 0:
            raise DatasetError(f"empty {name} split: it has no examples")
    problem = image_shape_problem(tuple(train[modelled[0]].shape[1:]), info.image_shape)
    if problem is not None:
        raise DatasetError(problem)
    try:
        pipeline, y, constant, per_example = fit_pipeline(
            params.transforms, _joined(train, modelled), seeded_generator(params.seed, "transforms/train")
        )
        caution_float32(y, "/".join(modelled))
        train = _with_model_space(train, modelled, y, per_example)
        y, _, per_example = pipeline.apply(_joined(test, modelled), seeded_generator(params.seed, "transforms/test"))
        test = _with_model_space(test, modelled, y, per_example)
    except PipelineError as error:
        raise DatasetError(str(error)) from None
    display = Display(pipeline, info.image_shape, info.pixel_max, info.base_display)
    to_model = ToModel(pipeline, info, params.seed) if modelled == ("x",) else None

    def data(fields: dict[str, Tensor]) -> TensorData:
        return TensorData(
            fields,
            image_shape=info.image_shape,
            to_display=display,
            ladj_to_model=own_ladj(info, pipeline) + constant,
            num_classes=info.num_classes,
            meta=dict(info.meta),
            to_model=to_model,
        )

    splits = Splits(train=data(train), test=data(test))
    splits.train.source, splits.test.source = TensorData(raw_train).fingerprint(), TensorData(raw_test).fingerprint()
    return splits


def image_shape_problem(event: tuple[int, ...], image_shape: tuple[int, ...] | None) -> str | None:
    """Why examples of shape ``event`` cannot be read as images of ``image_shape`` (C, H, W), or None.

    Flat examples of as many values are read in (C, H, W) order; examples that already have dimensions of their own
    must have image_shape's: the model reads them as they are, while every picture reshapes them to image_shape.
    """
    if image_shape is None:
        return None
    if math.prod(image_shape) != math.prod(event):
        return (
            f"the examples have shape {event}, {math.prod(event)} values each, but image_shape {list(image_shape)} "
            f"holds {math.prod(image_shape)}"
        )
    if len(event) <= 1 or event == tuple(image_shape):
        return None
    if len(event) == 3 and event == (*image_shape[1:], image_shape[0]):
        return (
            f"the examples have shape {event}, channels last, but image_shape {list(image_shape)} reads them channels "
            f"first, which would scramble every image; transpose the array to (N, {image_shape[0]}, {event[0]}, {event[1]}) "
            "(numpy: x.transpose(0, 3, 1, 2))"
        )
    fix = f"set image_shape: {list(event)} if that is their (C, H, W), or " if len(event) == 3 else ""
    return (
        f"the examples have shape {event}, but image_shape is {list(image_shape)}: the model would read them as they "
        f"are and every picture as {tuple(image_shape)}, which would scramble every image; {fix}give the examples "
        f"shape ({', '.join(map(str, image_shape))}), or make them flat"
    )


#: A feature whose float32 rounding moves values by more than this share of its spread is warned of.
FLOAT32_RESOLUTION = 1e-3


def caution_float32(y: Tensor, name: str) -> None:
    """Warn of a feature of ``y`` (float64, examples along dim 0) whose values float32, in which the examples are kept,
    moves by more than :data:`FLOAT32_RESOLUTION` of its spread: an offset large against the spread (timestamps,
    coordinates) rounds it onto a few values, and the warnings about data on a grid then blame the data; ``standardise``,
    in float64, keeps them.  Values float32 holds exactly (whole numbers, a float32 file's) are not warned of."""
    flat = y.reshape(len(y), -1)
    if len(flat) < 2:
        return
    low, high = flat.amin(0), flat.amax(0)
    moved = torch.zeros_like(low)
    # A block of 65536 values at a time: the allocator keeps what a block's copies took, so a million-value block left the
    # build's peak 3.5 times the data's float32 size higher.
    for rows in flat.split(max(1, 2**16 // flat.shape[1])):
        rounded = rows.to(torch.float32).to(rows.dtype)
        torch.maximum(moved, rounded.sub_(rows).abs_().amax(0), out=moved)
    lost = ((high > low) & (moved > FLOAT32_RESOLUTION * (high - low))).nonzero()
    if len(lost):
        j = int(lost[0])
        warnings.warn(SpecWarning(
            f"{name}: feature {j} spans {low[j].item():.10g}..{high[j].item():.10g}, and float32, in which examples are kept, "
            f"rounds its values by up to {moved[j].item():.3g}: its offset is large against its spread; subtract it, or add "
            f"the standardise transform (computed in float64){_more(len(lost))}"
        ), stacklevel=2)


def _more(count: int) -> str:
    return f"; {count - 1} more feature(s) alike" if count > 1 else ""


def _joined(fields: Mapping[str, Tensor], names: tuple[str, ...]) -> Tensor:
    parts = [fields[name].to(torch.float64) for name in names]
    return parts[0] if len(parts) == 1 else torch.cat(parts)  # one field: no copy of the whole split


def _with_model_space(
    fields: dict[str, Tensor], names: tuple[str, ...], y: Tensor, per_example: Tensor | None
) -> dict[str, Tensor]:
    sizes = [len(fields[name]) for name in names]
    out = dict(fields)
    for name, part in zip(names, torch.split(y, sizes), strict=True):
        out[name] = part.to(torch.float32).contiguous()
    if per_example is not None:
        for name, part in zip(names, torch.split(per_example, sizes), strict=True):
            out[ladj_field(name)] = part.to(torch.float32)
    return out
