"""Checks of metrics."""

from __future__ import annotations

import math
from typing import Any, Callable, Collection

import torch
from torch import Tensor, nn

from compose_gen.core.contracts import EvalContext, check_metric_result
from compose_gen.core.unchanged import data_change, snapshot
from compose_gen.testing.components._common import _calling, _core, _evaluating, _fail


def _name(obj: Any) -> str:
    """A function's name, or an object's class name."""
    return getattr(obj, "__name__", None) or type(obj).__name__


def _same(a: Tensor, b: Tensor) -> bool:
    """Equal, NaN where the other is NaN too."""
    return torch.equal(a, b) or (a.shape == b.shape and a.is_floating_point() and bool(((a == b) | (a.isnan() & b.isnan())).all()))


def check_metric(
    metric: Callable[[EvalContext], Any], ctx: EvalContext, *, allow_nonfinite: Collection[str] = (), label: str | None = None
) -> dict[str, float]:
    """Check a metric on ``ctx`` (see the module docstring); returns its values as floats.

    Values must be finite unless their key is in ``allow_nonfinite``.
    """
    label = label or _name(metric)
    model = ctx.model if isinstance(ctx.model, nn.Module) else None
    state = {k: v.detach().clone() for k, v in model.state_dict().items()} if model is not None else {}
    modes = [m.training for m in model.modules()] if model is not None else []
    trainable = [p.requires_grad for p in model.parameters()] if model is not None else []
    data = {(split, k): v.clone() for split in ("train", "test") for k, v in getattr(ctx.data, split).fields.items()}
    splits, seen = ctx.data, snapshot(ctx.data)
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()] if model is not None else []
    with _evaluating(model):  # as an evaluation calls it: in eval mode, without autograd
        with _calling(label, "the metric"), torch.no_grad():
            result = metric(ctx)
        trained = model is not None and any(m.training for m in model.modules())
    values = _core(label, check_metric_result, result)
    bad = [f"{k}={v}" for k, v in values.items() if not math.isfinite(v) and k not in allow_nonfinite]
    if bad:
        raise _fail(label, f"returned non-finite {', '.join(bad)}; expected finite values (or list the key in allow_nonfinite)")
    changed = data_change(splits, seen)  # a field or setting (meta, ladj_to_model) replaced, added, removed or changed in place
    if changed is None:  # values too: a change through .data moves no version counter
        moved = [f"{split} split's {k!r}" for (split, k), v in data.items() if not _same(getattr(splits, split).fields[k], v)]
        changed = f"changed the {moved[0]} in place" if moved else None
    if changed:
        raise _fail(label, f"{changed}; expected a metric to leave the data as it was (later metrics read it)")
    if model is not None:
        now = model.state_dict()
        changed = [k for k in now.keys() ^ state.keys()] + [k for k, v in now.items() if k in state and not _same(v, state[k])]
        if changed:
            raise _fail(label, f"changed the model's {changed[0]!r}; expected a metric to leave the model as it was")
        if trained or [m.training for m in model.modules()] != modes:
            raise _fail(label, "changed the model's training mode; expected a metric to leave the model as it was")
        if any((g is None) != (p.grad is None) or (g is not None and not _same(g, p.grad)) for g, p in zip(grads, model.parameters(), strict=True)):
            raise _fail(label, "changed the gradients of the model's parameters; expected a metric to leave the model as it was")
        if [p.requires_grad for p in model.parameters()] != trainable:
            raise _fail(label, "changed which of the model's parameters require grad; expected a metric to leave the model as it was")
    return values

