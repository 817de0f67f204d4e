"""What samplers and the metrics that draw samples share: sampling by class, and requiring a sampler.

A sampler with ``classes`` K draws example i for class i mod K; its ``condition``
names the graph value the model was trained on, which the compiled model makes
from those labels (:class:`compose_gen.ClassConditions`).  A metric that draws
samples calls :func:`require_sampler` when it is built, so ``validate`` finds a
spec that cannot feed it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator
from torch import nn

from compose_gen import BuildContext, ClassConditions, Params, Sampler, Value

__all__ = ["ByClassParams", "ClassCount", "DecoderMean", "check_conditions", "takes_condition", "require_sampler"]

#: A sampler's ``classes``: draw example i for class i mod K, from a model trained on a condition made from labels.
ClassCount = Annotated[
    int | None, Field(gt=0, strict=True, description="draw example i for class i mod classes (a conditional model)")
]
#: A latent-variable sampler's ``mean``: the decoder's mean E[x|z] rather than a draw x ~ p(x|z).
DecoderMean = Annotated[bool, Field(description="return E[x|z] instead of a draw (clearer images)")]


class ByClassParams(Params):
    """Sampling by class: a class-conditional model's sampler."""

    classes: ClassCount = None
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


def require_sampler(ctx: BuildContext, metric: str, by_class: bool = False) -> Sampler:
    """The spec's sampler, which a metric that draws samples needs (one that samples by class, with ``classes``)."""
    if ctx.sampler is None:
        raise ValueError(f"{metric} draws samples, but the spec has no `sample:` section saying how")
    if by_class and ctx.sampler.conditions is None:
        raise ValueError(f"{metric} needs a sampler that samples by class: set `classes` in the spec's `sample:`")
    return ctx.sampler


def takes_condition(component: nn.Module) -> bool:
    """Whether a component reads a condition c.

    A network declares ``context_features`` or ``num_classes`` (an encoder's or
    decoder's head, its ``net`` does); a conditional flow or prior, ``context_shape``.
    """
    if getattr(component, "context_shape", None) is not None:
        return True
    declares = hasattr(component, "context_features") or hasattr(component, "num_classes")
    if not declares and isinstance(getattr(component, "net", None), nn.Module):
        return takes_condition(component.net)
    return bool(getattr(component, "context_features", 0)) or getattr(component, "num_classes", None) is not None


def _context_features(component: nn.Module) -> int:
    """How many context features a network (or the ``net`` of an encoder's or decoder's head) reads; 0 for a label
    embedding (``num_classes``) or none."""
    if getattr(component, "num_classes", None) is not None:
        return 0
    if not hasattr(component, "context_features") and isinstance(getattr(component, "net", None), nn.Module):
        return _context_features(component.net)
    return int(getattr(component, "context_features", 0) or 0)


def check_conditions(parts: dict[str, nn.Module], p: ByClassParams) -> None:
    """A model is drawn by class iff one of its generative ``parts`` (named as the params name them) reads a condition."""
    conditional = [name for name, part in parts.items() if takes_condition(part)]
    if conditional and p.classes is None:
        raise ValueError(
            f"the {' and the '.join(conditional)} {'is' if len(conditional) == 1 else 'are'} conditional: "
            "set classes to draw it by class (and condition, unless it reads y itself)"
        )
    vectors = {name: features for name in conditional if (features := _context_features(parts[name]))}
    if vectors and p.classes is not None and p.condition is None:  # the default condition, y, is one label per example
        name, features = next(iter(vectors.items()))
        raise ValueError(
            f"the {name} reads a context of {features} features, not the labels y: set condition to the graph value it was "
            "trained on (its loss's `context:`, such as c for c: one_hot(y, 10))"
        )
    if not conditional and p.classes is not None:
        named = " nor ".join(f"the {name}" for name in parts)
        what = f"neither {named} takes a condition" if len(parts) > 1 else f"{named} takes no condition"
        raise ValueError(f"{what} (no num_classes, context_features or context_shape), so it cannot be drawn by class")


def means_of_discrete(decoder: nn.Module | None, mean: bool) -> str | None:
    """The distortion of returning E[x|z] from a decoder of discrete values (Bernoulli, categorical): no example
    of the data's looks like a mean, so precision/recall, the birthday test or a Fréchet distance score a setting."""
    if mean and getattr(decoder, "discrete", False):
        return "mean: true (the means of a discrete decoder, which are not values the data hold; mean: false draws from the model)"
    return None
