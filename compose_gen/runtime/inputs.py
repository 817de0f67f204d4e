"""Checks of the examples and labels a user hands to :meth:`compose_gen.runtime.Run.log_prob`.

Each refusal names the argument and what to give instead, before any of the model runs.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["as_examples", "as_labels", "check_counts", "class_names_in"]


def check_counts(caller: str, **counts: Any) -> None:
    """Refuse any of ``counts`` (name → value, checked in order) that is not a whole number ≥ 1."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{caller}: {name} must be a whole number ≥ 1, got {value!r}")


def as_examples(x: Any) -> Tensor:
    """``x`` as a tensor of one or more examples, finite where it holds floats."""
    x = torch.as_tensor(x)
    if x.dim() == 0 or len(x) == 0:
        raise ValueError(f"log_prob: x holds no examples (shape {tuple(x.shape)})")
    if x.is_floating_point() and not bool(x.isfinite().all()):
        first = int((~x.isfinite()).reshape(len(x), -1).any(1).nonzero()[0])
        raise ValueError(
            f"log_prob: x holds values that are NaN, infinite or beyond float32's range, which its tensor makes infinite "
            f"(the first in example {first}); give finite examples"
        )
    return x


def class_names_in(y: Any, named: bool) -> list[Any] | None:
    """``y`` flattened to a list of classes as ``sample`` takes them (names, or labels), else None: where it is no tensor
    and holds a text, or the data name their classes (``named``), so that ``2`` means the class ``sample`` draws for 2."""
    if y is None or isinstance(y, Tensor):
        return None
    given = np.asarray(y, dtype=object).reshape(-1).tolist()
    return given if named or any(isinstance(label, str) for label in given) else None


def as_labels(y: Any) -> Tensor | None:
    """``y`` (None: no labels) as a flat tensor of class labels, refused unless they are whole numbers."""
    if y is None:
        return None
    labels = torch.as_tensor(y)
    if labels.dtype == torch.bool:  # a mask (y == 3) is no class: sample's classes refuse True too
        raise ValueError("log_prob: the labels y are booleans, not class labels; give the classes (a mask's y.long() where 0 and 1 are meant)")
    if labels.is_floating_point() and not bool((labels.isfinite() & (labels == labels.round())).all()):
        raise ValueError("log_prob: the labels y must be whole numbers (class labels)")
    return labels.long().reshape(-1)
