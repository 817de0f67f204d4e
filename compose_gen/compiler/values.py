"""Turning parsed graph calls into functions of the values computed so far."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from compose_gen.compiler.expressions import Call
from compose_gen.core.data import MAX_CLASSES

__all__ = ["BUILTINS", "DISTRIBUTION_METHODS", "TENSOR_METHODS", "builtin_misuse", "make_evaluator"]

#: Methods (or properties) a distribution-valued graph value may be asked for.
DISTRIBUTION_METHODS = frozenset({"sample", "rsample", "log_prob", "mean", "mode", "stddev", "entropy"})
TENSOR_METHODS = frozenset({"detach"})

Values = dict[str, Any]


def _cat(*tensors: Tensor) -> Tensor:
    """The values side by side, each flattened to one row per example (a value of shape ``(B,)`` is one column)."""
    for t in tensors:
        if not (t.is_floating_point() or t.is_complex()):  # class labels: their numbers are names, not quantities
            raise TypeError(f"cat takes values of real numbers, got {t.dtype} of shape {tuple(t.shape)}: for class labels, cat one_hot(y, K)")
    return torch.cat([t.reshape(len(t), -1) for t in tensors], dim=-1)


def _one_hot(labels: Tensor, classes: int) -> Tensor:
    """Integer labels as float rows of ``classes`` zeros and a one: a class as a flow's context or a network's input."""
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"one_hot takes integer class labels, got a {labels.dtype} tensor of shape {tuple(labels.shape)}")
    try:
        return torch.nn.functional.one_hot(labels.long(), classes).float()
    except RuntimeError:
        raise ValueError(f"one_hot(…, {classes}) takes labels 0..{classes - 1}, got {int(labels.min())}..{int(labels.max())}") from None


def _names(args: tuple[Any, ...]) -> bool:
    return bool(args) and all(isinstance(a, str) for a in args)


def _class_count(value: Any) -> bool:
    return not isinstance(value, str) and value == int(value) and 1 <= value <= MAX_CLASSES


def _detach(value: Any) -> Tensor:
    """``value.detach()``: a distribution has no one value to cut from the graph."""
    if isinstance(value, Distribution):
        raise TypeError(
            f"detach takes a tensor, not a distribution ({type(value).__name__}): detach a draw of it, as in "
            "`z: q.rsample()` then `detach(z)`, or use `q.sample()`, which draws without gradient"
        )
    return value.detach()


#: Builtin: (function, whether the arguments fit it, how it is called).
_BUILTINS: dict[str, tuple[Callable[..., Any], Callable[[tuple[Any, ...]], bool], str]] = {
    "cat": (_cat, _names, "cat(a, b, ...) of one or more values"),
    "detach": (_detach, lambda args: len(args) == 1 and _names(args), "detach(a) of one value"),
    "one_hot": (
        lambda labels, classes: _one_hot(labels, int(classes)),
        lambda args: len(args) == 2 and _names(args[:1]) and _class_count(args[1]),
        f"one_hot(y, K) of integer labels and a whole number of classes K from 1 to {MAX_CLASSES}",
    ),
}
#: The functions a graph call may name besides components and values.
BUILTINS = frozenset(_BUILTINS)


def builtin_misuse(call: Call) -> str | None:
    """What is wrong with the arguments of a call to a builtin, or None (also for calls that are not builtins)."""
    if call.method is not None or call.target not in _BUILTINS:
        return None
    _, fits, usage = _BUILTINS[call.target]
    return None if fits(call.args) else f"{call} does not fit {usage}"


def make_evaluator(call: Call, components: dict[str, nn.Module]) -> Callable[[Values], Any]:
    """A function computing ``call`` from the current values.

    ``ValueError`` for a method the component does not offer (its build checked that it has those it offers).
    """
    args = call.args

    def read(values: Values) -> list[Any]:
        return [values[a] if isinstance(a, str) else a for a in args]

    if call.target in components:
        module = components[call.target]
        if call.method is None:
            return lambda values: module(*read(values))
        allowed = getattr(module, "graph_methods", ())
        if call.method not in allowed:
            offered = ", ".join(allowed) or "none"
            raise ValueError(f"{call.target!r} offers no graph method {call.method!r} (it offers: {offered})")
        method = getattr(module, call.method)  # there: the build checked graph_methods
        return lambda values: method(*read(values))
    if call.method is None:
        builtin = _BUILTINS[call.target][0]
        return lambda values: builtin(*read(values))
    name, method_name = call.target, call.method

    def on_value(values: Values) -> Any:
        value = values[name]
        if isinstance(value, Distribution) and method_name in DISTRIBUTION_METHODS:
            attribute = getattr(value, method_name)
            if not callable(attribute):
                if call.args:  # they were dropped without a word: q.mean(x, 7) was q.mean
                    raise TypeError(f"{name}.{method_name}() takes no arguments (the distribution's {method_name}), got {len(call.args)}")
                return attribute
            extra = read(values)
            if method_name in ("sample", "rsample"):
                extra = [torch.Size([int(a)]) if isinstance(a, (int, float)) else a for a in extra]
            return attribute(*extra)
        if isinstance(value, Tensor) and method_name in TENSOR_METHODS:
            return getattr(value, method_name)(*read(values))
        kind = "distribution" if isinstance(value, Distribution) else type(value).__name__
        allowed = DISTRIBUTION_METHODS if isinstance(value, Distribution) else TENSOR_METHODS
        raise TypeError(f"{name!r} is a {kind}; it offers {', '.join(sorted(allowed))}, not {method_name!r}")

    return on_value
