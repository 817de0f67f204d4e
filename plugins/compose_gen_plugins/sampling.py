"""What samplers and the metrics that draw samples share: sampling by class, and requiring a sampler.

A sampler with ``classes`` K draws example i for class i mod K; its ``condition``
names the graph value the model was trained on, which the compiled model makes
from those labels (:class:`compose_gen.ClassConditions`).  A metric that draws
samples calls :func:`require_sampler` when it is built, so ``validate`` finds a
spec that cannot feed it.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from torch import nn

from compose_gen import BuildContext, ClassConditions, Params, Value

__all__ = ["ByClassParams", "check_generator_conditions", "require_sampler"]


class ByClassParams(Params):
    """Sampling by class: a class-conditional model's sampler."""

    classes: int | None = Field(None, gt=0, strict=True, description="draw example i for class i mod classes (a conditional model)")
    condition: Value | None = Field(
        None, description="graph value the model is conditioned on, made from the labels y (c for c: one_hot(y, 10)); default y"
    )

    @model_validator(mode="after")
    def _condition_needs_classes(self) -> "ByClassParams":
        if self.condition is not None and self.classes is None:
            raise ValueError("condition is made from class labels: set classes too")
        return self

    def conditions(self) -> ClassConditions | None:
        return None if self.classes is None else ClassConditions(self.condition or "y", self.classes)


def require_sampler(ctx: BuildContext, metric: str, by_class: bool = False) -> None:
    """A metric that draws samples needs the spec's ``sample:``, one that samples by class a sampler with ``classes``."""
    if ctx.sampler is None:
        raise ValueError(f"{metric} draws samples, but the spec has no `sample:` section saying how")
    if by_class and ctx.sampler.conditions is None:
        raise ValueError(f"{metric} needs a sampler that samples by class: set `classes` in the spec's `sample:`")


def check_generator_conditions(generator: nn.Module, p: ByClassParams) -> None:
    """A conditional generator (``num_classes`` or ``context_features``) is drawn by class; an unconditional one is not."""
    conditional = getattr(generator, "num_classes", None) is not None or bool(getattr(generator, "context_features", 0))
    if conditional and p.classes is None:
        raise ValueError("the generator is conditional: set classes to draw it by class (and condition, unless it reads y itself)")
    if not conditional and p.classes is not None:
        raise ValueError("the generator takes no condition (no num_classes or context_features), so it cannot be drawn by class")
