"""The preprocessing pipeline that a dataset's ``transforms:`` list declares.

Every dataset accepts ``transforms:``, a list of steps applied in order from data
space (the values as read) to model space (what the model sees)::

    transforms: [{type: dequantize, levels: 17}, {type: logit, alpha: 0.05}, flatten]

A step is given as ``{type: name, ...}`` or, without parameters, by its name.
Each step ``f`` reports ``log|det ∂f/∂x|`` per example, so a density in model
space converts back exactly: ``log p_data(x) = log p_model(f(x)) + ladj(x)``.

* ``scale`` — ``y = a·x + b``;  ladj = ``D·log|a|``.
* ``standardise`` — ``y = (x - μ)/σ`` per feature, μ and σ from the *train*
  split (a constant feature keeps σ = 1);  ladj = ``-Σ log σ``.
* ``flatten`` / ``reshape`` — event shape only;  ladj = 0.
* ``dequantize`` — integer values ``k ∈ {0..levels-1}`` become
  ``(k + u)/levels`` with ``u ~ U[0, 1)^D``;  ladj = ``-D·log(levels)``, so
  ``log P(k) ≥ E_u[log p_model(y)] - D·log(levels)`` (Theis et al., 2016, "A note
  on the evaluation of generative models").  The noise is drawn once, seeded,
  when the dataset is built (see :func:`fit_pipeline`).
* ``logit`` — ``y = logit(α + (1 - 2α)·x)`` for ``x ∈ [0, 1]`` (Dinh et al., 2017,
  "Density estimation using Real NVP");  ladj =
  ``Σ [log(1 - 2α) - log s - log(1 - s)]`` with ``s = α + (1 - 2α)·x``, which
  depends on ``x``: it is the one *per-example* log-determinant.
* ``binarize`` — ``x ∈ [0, 1]`` becomes ``1[x ≥ threshold]``, or a draw
  ``b ~ Bernoulli(x)`` once per example, seeded (``mode: bernoulli``, the
  stochastic binarization of Salakhutdinov & Murray, 2008, "On the quantitative
  analysis of deep belief networks").  Not invertible: from here on the data
  *are* the binary vectors, as if read so from a file, and likelihoods are of
  them, as in the binarized-MNIST literature.  The log-determinants before it
  (the dataset's own scaling included) no longer apply; the steps after it count
  as for any integer data (a ``scale`` by 1/2 gives a flow's ``dequantize`` head
  with ``levels: 2`` its bin volume; a discrete decoder's probability ignores them).

Every step's output must be finite in float32, the model's precision: a step
that makes a value overflow it (``scale`` by ``a: 1e300``) is an error naming
the step and the value.

Constant log-determinants add up to one number; per-example ones to a tensor of
shape ``(N,)``.  :class:`Pipeline.inverse` undoes every step (dequantization by
flooring), which is what ``to_display`` uses.

Design decision: the whole pipeline runs once, when the dataset is built, so a
``TensorData`` stays a set of fixed tensors in model space (what the compiler's
dry run, the trainer and the metrics read) and every log-determinant is exact
for the stored values.  The price is that dequantization noise is one seeded
draw per example rather than fresh noise per batch; for fresh noise, keep the
data discrete here and put a dequantization bijector in the model instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal, Union, get_args

import torch
from pydantic import BeforeValidator, Field, field_validator, model_validator
from torch import Tensor

from compose_gen import Params
from compose_gen_plugins.datasets.limits import BEYOND_FLOAT32, float32_overflow

__all__ = [
    "BinarizeStep",
    "DequantizeStep",
    "FlattenStep",
    "LogitStep",
    "NamedStep",
    "Pipeline",
    "PipelineError",
    "ReshapeStep",
    "STEPS",
    "ScaleStep",
    "StandardiseStep",
    "TransformSpec",
    "fit_pipeline",
]


class PipelineError(ValueError):
    """A transform that cannot apply to the data it receives."""


# --- fitted steps: forward(x) -> (y, ladj), inverse(y) -> x; x has shape (*batch, *event)


class _Fitted:
    """A step fixed on the train split.

    ``forward(x, generator)`` returns ``(y, ladj)``, the log-determinant a float when
    it is constant and a tensor of shape ``(N,)`` when it is per example;
    ``inverse(y)`` undoes it.  Both take ``x`` of shape ``(*batch, *event)``.
    """

    #: Whether the step binarizes, so that the log-determinants before it no longer apply.
    binarizes: ClassVar[bool] = False

    def forward(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, float | Tensor]:
        raise NotImplementedError

    def inverse(self, y: Tensor) -> Tensor:
        raise NotImplementedError


@dataclass
class _Affine(_Fitted):
    """``y = x·scale + shift`` with ``scale``/``shift`` broadcastable to the event shape."""

    scale: Tensor
    shift: Tensor
    event_shape: torch.Size

    def forward(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, float]:
        ladj = torch.log(self.scale.abs()).expand(self.event_shape).sum().item()
        return x * self.scale.to(x) + self.shift.to(x), ladj

    def inverse(self, y: Tensor) -> Tensor:
        return (y - self.shift.to(y)) / self.scale.to(y)


@dataclass
class _Reshape(_Fitted):
    in_shape: torch.Size
    out_shape: torch.Size

    def forward(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, float]:
        return _reshape_event(x, self.in_shape, self.out_shape), 0.0

    def inverse(self, y: Tensor) -> Tensor:
        return _reshape_event(y, self.out_shape, self.in_shape)


# _Dequantize and _Logit keep their own formulas rather than calling the bijectors of the flows plugin
# (flows/dequantize.py, flows/elementwise.py): flows imports from datasets (flows/distribution.py), so datasets
# importing flows would make the two plugins depend on each other, and the numbers would change.  This step takes
# integers k to (k + u)/levels with a seeded draw and floors back to k, where UniformDequantization takes k/L to
# k/L + u/L with unseeded noise; the Logit bijector computes torch.logit(p) and log1p(-2α) + (-log p - log(1 - p)),
# which differ from log p - log(1 - p) and (log(1 - 2α) - log p) - log(1 - p) here in the last bits (float64).


@dataclass
class _Dequantize(_Fitted):
    levels: int

    def forward(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, float]:
        integers = bool((x == x.round()).all())
        if not integers or (x < 0).any() or (x > self.levels - 1).any():
            raise PipelineError(
                f"dequantize expects integer values in 0..{self.levels - 1}; got values in "
                f"[{x.min().item():g}, {x.max().item():g}]"
                + ("" if integers else " that are not all integers (dequantize before scaling, not after: a dataset's "
                   "default `scale: true` has already scaled the pixels, so set `scale: false`)")
            )
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return (x + noise) / self.levels, -math.prod(x.shape[1:]) * math.log(self.levels)

    def inverse(self, y: Tensor) -> Tensor:
        return torch.floor(y * self.levels).clamp(0, self.levels - 1)


@dataclass
class _Logit(_Fitted):
    alpha: float

    def forward(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if (x < 0).any() or (x > 1).any():
            raise PipelineError(
                f"logit expects values in [0, 1]; got values in [{x.min().item():g}, {x.max().item():g}]"
            )
        s = self.alpha + (1 - 2 * self.alpha) * x
        if self.alpha == 0 and ((s == 0) | (s == 1)).any():
            raise PipelineError(
                "logit with alpha = 0 needs values strictly inside (0, 1); dequantize first or use alpha > 0"
            )
        log_s, log_1ms = torch.log(s), torch.log1p(-s)
        per_element = math.log(1 - 2 * self.alpha) - log_s - log_1ms
        return log_s - log_1ms, per_element.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        return (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)


@dataclass
class _Binarize(_Fitted):
    mode: Literal["threshold", "bernoulli"]
    threshold: float

    binarizes: ClassVar[bool] = True

    def forward(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, float]:
        if (x < 0).any() or (x > 1).any():
            raise PipelineError(
                f"binarize expects values in [0, 1]; got values in [{x.min().item():g}, {x.max().item():g}] "
                "(scale them first: a dataset's `scale: true`, or a `scale` step)"
            )
        if self.mode == "threshold":
            return (x >= self.threshold).to(x.dtype), 0.0
        return torch.bernoulli(x.cpu(), generator=generator).to(x), 0.0

    def inverse(self, y: Tensor) -> Tensor:
        return y


def _reshape_event(x: Tensor, event: torch.Size, new_event: torch.Size) -> Tensor:
    return x.reshape(*x.shape[: x.dim() - len(event)], *new_event)


# --- step specs: what a ``transforms:`` list declares; each fits itself on the train split


class _StepParams(Params):
    """One step of a ``transforms:`` list, as a spec declares it."""

    def fit(self, x: Tensor) -> _Fitted:
        """This step fixed on ``x``, the train split as it reaches the step: shape ``(N, *event)``, float64.

        Raises :class:`PipelineError` when the step cannot apply to ``x``; the
        message need not name the step's place in the list, :func:`fit_pipeline` adds it.
        """
        raise NotImplementedError


class ScaleStep(_StepParams):
    """``y = a·x + b``."""

    type: Literal["scale"]
    a: float = Field(allow_inf_nan=False)
    b: float = Field(0.0, allow_inf_nan=False)

    @field_validator("a")
    @classmethod
    def _nonzero(cls, a: float) -> float:
        if a == 0:
            raise ValueError("scale by a = 0 is not invertible")
        return a

    def fit(self, x: Tensor) -> _Affine:
        return _Affine(torch.tensor(self.a, dtype=x.dtype), torch.tensor(self.b, dtype=x.dtype), x.shape[1:])


class StandardiseStep(_StepParams):
    """``y = (x - μ)/σ`` per feature, with train statistics."""

    type: Literal["standardise"]

    def fit(self, x: Tensor) -> _Affine:
        if len(x) < 2:
            raise PipelineError("standardise needs at least 2 training examples")
        mean, std = x.mean(0), x.std(0)
        std = torch.where(std > 1e-12 * mean.abs().clamp_min(1.0), std, torch.ones_like(std))
        return _Affine(1 / std, -mean / std, x.shape[1:])


class FlattenStep(_StepParams):
    """Event dimensions become one."""

    type: Literal["flatten"]

    def fit(self, x: Tensor) -> _Reshape:
        event = x.shape[1:]
        return _Reshape(event, torch.Size([math.prod(event)]))


class ReshapeStep(_StepParams):
    """Event dimensions become ``shape`` (same number of elements)."""

    type: Literal["reshape"]
    shape: tuple[Annotated[int, Field(gt=0)], ...] = Field(min_length=1)

    def fit(self, x: Tensor) -> _Reshape:
        event = x.shape[1:]
        if math.prod(self.shape) != math.prod(event):
            raise PipelineError(f"cannot reshape event shape {tuple(event)} ({math.prod(event)} values) to {self.shape}")
        return _Reshape(event, torch.Size(self.shape))


class DequantizeStep(_StepParams):
    """Integers ``0..levels-1`` plus uniform noise, divided by ``levels``."""

    type: Literal["dequantize"]
    levels: int = Field(ge=2)

    def fit(self, x: Tensor) -> _Dequantize:
        return _Dequantize(self.levels)


class LogitStep(_StepParams):
    """``y = logit(α + (1 - 2α)·x)`` for ``x`` in ``[0, 1]``."""

    type: Literal["logit"]
    alpha: float = Field(0.05, ge=0.0, lt=0.5)

    def fit(self, x: Tensor) -> _Logit:
        return _Logit(self.alpha)


#: The least value that ``binarize`` in mode threshold makes 1, unless the spec gives another.
DEFAULT_THRESHOLD = 0.5


class BinarizeStep(_StepParams):
    """``x`` in ``[0, 1]`` becomes ``1[x ≥ threshold]``, or ``b ~ Bernoulli(x)`` drawn once per example."""

    type: Literal["binarize"]
    mode: Literal["threshold", "bernoulli"] = "threshold"
    threshold: float | None = Field(
        None, gt=0.0, lt=1.0,
        description=f"mode threshold: the least value that becomes 1 (default {DEFAULT_THRESHOLD}); mode bernoulli: none",
    )

    @model_validator(mode="after")
    def _threshold_only_for_threshold(self) -> "BinarizeStep":
        """Mode threshold gets its default written in, mode bernoulli none: the resolved spec then validates again,
        while a threshold that a spec gives mode bernoulli, which would be ignored, is still refused."""
        if self.mode == "bernoulli" and self.threshold is not None:
            raise ValueError("mode bernoulli draws b ~ Bernoulli(x) and uses no threshold: drop it, or use mode threshold")
        if self.mode == "threshold" and self.threshold is None:
            self.__dict__["threshold"] = DEFAULT_THRESHOLD  # not setattr: Params may be frozen
        return self

    def fit(self, x: Tensor) -> _Binarize:
        return _Binarize(self.mode, DEFAULT_THRESHOLD if self.threshold is None else self.threshold)


#: Every step a ``transforms:`` list may hold, in the order the JSON Schema lists them.  A new transform is a
#: :class:`_StepParams` subclass with a ``type`` literal and a ``fit`` (and, if no fitted step above does its
#: work, a :class:`_Fitted` subclass), added here: the spec union and the names below follow from this tuple.
STEPS: tuple[type[_StepParams], ...] = (
    ScaleStep, StandardiseStep, FlattenStep, ReshapeStep, DequantizeStep, LogitStep, BinarizeStep,
)


def _type_name(step: type[_StepParams]) -> str:
    return get_args(step.model_fields["type"].annotation)[0]


def _named_step(value: object) -> object:
    return {"type": value} if isinstance(value, str) else value


_Step = Annotated[Union[STEPS], Field(discriminator="type")]
#: The steps that need no parameters, which a spec may write by name alone (``transforms: [standardise]``).
NamedStep = Literal[
    tuple(
        _type_name(step)
        for step in STEPS
        if not any(field.is_required() for name, field in step.model_fields.items() if name != "type")
    )
]

#: One entry of a ``transforms:`` list; the JSON Schema admits the by-name form too.
TransformSpec = Annotated[_Step, BeforeValidator(_named_step, json_schema_input_type=Union[NamedStep, _Step])]


class _Ladj:
    """Accumulates the constant and the per-example log-determinants of applied steps.

    A ``binarize`` starts over: the binary vectors are the data from there on.
    """

    def __init__(self) -> None:
        self.constant = 0.0
        self.per_example: Tensor | None = None

    def add(self, index: int, step: _Fitted, x: Tensor, generator: torch.Generator) -> Tensor:
        try:
            y, ladj = step.forward(x, generator)
        except PipelineError as error:
            raise PipelineError(f"transforms[{index}]: {error}") from None
        overflow = float32_overflow(y)
        if overflow is not None:
            raise PipelineError(f"transforms[{index}]: makes a value {y[overflow].item():g}, {BEYOND_FLOAT32}")
        if step.binarizes:
            self.constant, self.per_example = 0.0, None
        elif isinstance(ladj, Tensor):
            self.per_example = ladj if self.per_example is None else self.per_example + ladj
        else:
            self.constant += ladj
        return y


@dataclass
class Pipeline:
    """A fitted pipeline: the steps with their statistics and shapes fixed on the train split."""

    steps: list[_Fitted]
    in_shape: torch.Size
    out_shape: torch.Size

    @property
    def binarizes(self) -> bool:
        """Whether a step binarizes, so that the data's own log-determinant (from the values read) no longer applies."""
        return any(step.binarizes for step in self.steps)

    def apply(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, float, Tensor | None]:
        """Map ``(N, *in_shape)`` to model space: ``(y, constant ladj, per-example ladj or None)``."""
        ladj = _Ladj()
        for index, step in enumerate(self.steps):
            x = ladj.add(index, step, x, generator)
        return x, ladj.constant, ladj.per_example

    def inverse(self, y: Tensor) -> Tensor:
        """Map model-space ``(*batch, *out_shape)`` back to data space."""
        for step in reversed(self.steps):
            y = step.inverse(y)
        return y


def fit_pipeline(
    specs: list[TransformSpec], x_train: Tensor, generator: torch.Generator
) -> tuple[Pipeline, Tensor, float, Tensor | None]:
    """Fit ``specs`` on ``x_train`` (shape ``(N, *event)``) and transform it.

    Statistics (``standardise``) come from the data as it reaches that step, so
    a step after ``dequantize`` sees the noisy values.  Returns the pipeline and
    ``Pipeline.apply``'s result for ``x_train``.
    """
    steps: list[_Fitted] = []
    ladj = _Ladj()
    x = x_train
    for index, spec in enumerate(specs):
        try:
            steps.append(spec.fit(x))
        except PipelineError as error:
            raise PipelineError(f"transforms[{index}]: {error}") from None
        x = ladj.add(index, steps[-1], x, generator)
    return Pipeline(steps, x_train.shape[1:], x.shape[1:]), x, ladj.constant, ladj.per_example
