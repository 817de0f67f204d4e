"""Checks of losses."""

from __future__ import annotations

from typing import Any, Collection, Iterator, Mapping

import torch
from torch import Tensor, nn

from compose_gen.core.contracts import Loss, check_loss_result, check_loss_terms
from compose_gen.testing.components._common import ATOL, RTOL, _calling, _close, _core, _fail, _finite, _seeded, _shape


def _leaves(tensor: Tensor) -> list[Tensor]:
    """The leaf tensors requiring grad that ``tensor``'s autograd graph reaches."""
    found: dict[int, Tensor] = {}
    stack, seen = [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if isinstance(variable, Tensor):
            found[id(variable)] = variable
        stack.extend(next_node for next_node, _ in node.next_functions)
    return list(found.values())


def _tensors(value: Any) -> Iterator[Tensor]:
    """The tensors of an input: itself, or those of a list or tuple."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def check_loss(
    loss: Loss,
    inputs: Mapping[str, Any],
    terms: Collection[str] | None = None,
    *,
    grad_to: Mapping[str, Collection[str]] | None = None,
    seed: int = 0,
    label: str | None = None,
) -> dict[str, Tensor]:
    """Check a loss on ``inputs`` for ``terms`` (default: all its terms); returns its result.

    Make ``inputs`` as a player would, with gradients: e.g. ``fake`` from a generator
    whose parameters require grad, so each term's gradient has somewhere to go.
    ``grad_to`` names, per term, the inputs its gradient must reach, e.g.
    ``{"generator": ["fake"]}``: a generator term that detached ``fake`` still
    reaches the critic's parameters, which only this catches.
    """
    label = label or type(loss).__name__
    _core(label, check_loss_terms, loss)
    terms = tuple(loss.terms) if terms is None else tuple(terms)
    unknown = [t for t in [*terms, *(grad_to or {})] if t not in loss.terms]
    if unknown:
        raise ValueError(f"{label} has no term {', '.join(map(repr, unknown))}; its terms are {tuple(loss.terms)}")
    missing = [name for names in (grad_to or {}).values() for name in names if name not in inputs]
    if missing:
        raise ValueError(f"grad_to names input {', '.join(map(repr, missing))}, which inputs lack; they are {sorted(inputs)}")
    with torch.enable_grad():
        with _seeded(seed):
            result = _loss_result(loss, inputs, terms, label)
        _check_term_gradients(loss, inputs, result, terms, label)
        for term, names in (grad_to or {}).items():
            _check_reaches(result[term], term, {name: inputs[name] for name in names}, label)
        for term in terms:
            needed = loss.inputs_for({term}, inputs)
            if needed != set(inputs):
                _check_term_inputs(loss, inputs, needed, term, seed, label)
    return result


def _check_term_inputs(loss: Loss, inputs: Mapping[str, Any], needed: set[str], term: str, seed: int, label: str) -> None:
    """``term`` computed from just its ``term_inputs`` has the value it has given every input (same seed)."""
    with _seeded(seed):
        full = _loss_result(loss, inputs, (term,), label)[term]
    with _seeded(seed):
        only = _loss_result(loss, {k: v for k, v in inputs.items() if k in needed}, (term,), f"{label} (term {term!r} given only its term_inputs {sorted(needed)})")[term]
    _close(label, f"term {term!r} given only its term_inputs {sorted(needed)} differs from its value given every input; "
           "expected term_inputs to list everything the term reads", only, full, ATOL, RTOL)


def _check_reaches(value: Tensor, term: str, targets: Mapping[str, Any], label: str) -> None:
    """``term``'s gradient reaches each of ``targets`` (named inputs)."""
    for name, target in targets.items():
        if not any(t.requires_grad for t in _tensors(target)):
            raise ValueError(f"{label}: grad_to names input {name!r} for term {term!r}, but it does not require grad")
        if not any(_reaches(value, t) for t in _tensors(target) if t.requires_grad):
            raise _fail(label, f"term {term!r} gets no gradient to input {name!r} (detached?); expected its player to be trained through it")


def _reaches(value: Tensor, target: Tensor) -> bool:
    """Whether ``value``'s gradient flows to ``target`` (a leaf or an intermediate result)."""
    if value.grad_fn is None:
        return False
    (grad,) = torch.autograd.grad(value, target, retain_graph=True, allow_unused=True)
    return grad is not None


def _loss_result(loss: Loss, inputs: Mapping[str, Any], terms: tuple[str, ...], label: str) -> dict[str, Tensor]:
    with _calling(label, f"forward(inputs {sorted(inputs)}, terms {sorted(terms)})"):
        result = loss(inputs, frozenset(terms))
    _core(label, check_loss_result, result, terms)
    for key, value in result.items():
        if not bool(torch.isfinite(value.detach()).all()):
            raise _fail(label, f"forward returned {key!r} = {value.item():g}; expected a finite value")
    return dict(result)


def _check_term_gradients(loss: Loss, inputs: Mapping[str, Any], result: dict[str, Tensor], terms: tuple[str, ...], label: str) -> None:
    """Each term's gradient reaches a parameter or input requiring grad, and is finite there."""
    sources = {id(p): f"parameter {n!r}" for n, p in loss.named_parameters()}
    sources |= {id(t): f"input {k!r}" for k, v in inputs.items() for t in _tensors(v)}
    wanted = [f"parameter {name!r}" for name, p in loss.named_parameters() if p.requires_grad]
    wanted += [f"input {k!r}" for k, v in inputs.items() if any(t.requires_grad for t in _tensors(v))]
    if not wanted:
        raise ValueError(f"{label}: no parameter of the loss and no input requires grad, so no gradient can be checked; "
                         "make the inputs as a player would (e.g. fake = generator(z) with its parameters)")
    for term in terms:
        value = result[term]
        if value.grad_fn is None:
            raise _fail(label, f"term {term!r} carries no gradient although {wanted[0]} requires grad (detached, or made with .item()?); "
                        "expected a term its player can minimise")
        leaves = _leaves(value)
        grads = torch.autograd.grad(value, leaves, retain_graph=True, allow_unused=True)
        for leaf, grad in zip(leaves, grads, strict=True):
            if grad is not None:
                _finite(label, f"the gradient of term {term!r} for {sources.get(id(leaf), f'a tensor of shape {_shape(leaf.shape)}')}", grad)
        # a parameter of the loss, or of a component it calls (a critic it names), or an input
        reached = any(grad is not None and isinstance(leaf, nn.Parameter) for leaf, grad in zip(leaves, grads, strict=True))
        if not reached and not any(_reaches(value, t) for v in inputs.values() for t in _tensors(v) if t.requires_grad):
            raise _fail(label, f"term {term!r} has a gradient, but to no parameter and to no input: only to tensors that require "
                        "grad but are no nn.Parameter, which no optimizer trains")

