"""Instantiating declarations through their types' ``build(params, ctx)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import networkx as nx
from torch import nn

from compose_gen.compiler.checks import ContractWatch, enforce
from compose_gen.compiler.graph import SpecGraph
from compose_gen.core import Bijector, Loss, Sampler, Splits
from compose_gen.core.contracts import check_conditions, check_loss_terms
from compose_gen.registry import suggest
from compose_gen.spec import Declared, Problem, Spec, SpecError

__all__ = ["Builder", "build_all", "build_data"]

_EXPECTED: dict[str, type] = {
    "bijector": Bijector,
    "loss": Loss,
    "sampler": Sampler,
    "dataset": Splits,
    "metric": Callable,
}


class Builder:
    """The compiler's implementation of :class:`compose_gen.core.BuildContext`."""

    def __init__(self, spec: Spec, data: Splits | None, watch: ContractWatch | None = None) -> None:
        self.spec = spec
        self.data = data
        #: Checks the outputs of every component built, while it is set.
        self.watch = watch
        self.built: dict[str, nn.Module] = {}
        self.losses: dict[str, Loss] = {}
        self.sampler: Sampler | None = None

    def component(self, ref: str) -> Any:
        return self.built[ref]

    def loss(self, name: str) -> Loss:
        if name not in self.losses:
            raise ValueError(f"unknown loss {name!r}{suggest(name, self.losses)}; losses: {', '.join(self.losses) or 'none'}")
        return self.losses[name]

    def make(self, declared: Declared) -> Any:
        """Build one declaration, turning a plugin's failure into a located spec error."""
        try:
            built = declared.type.build(declared.params, self)
        except SpecError:
            raise
        except Exception as error:
            raise self.spec.blame(declared, f"failed to build: {type(error).__name__}: {error}") from None
        expected = _EXPECTED.get(declared.kind, nn.Module)
        if not isinstance(built, expected):
            raise self.spec.blame(declared, f"built a {type(built).__name__}, not a {expected.__name__} as a {declared.kind} must be")
        if isinstance(built, Loss):
            enforce(self.spec, declared, check_loss_terms, built)
        if isinstance(built, Sampler):
            enforce(self.spec, declared, check_conditions, built)
        if self.watch is not None:
            self.watch.watch(declared, built)
        return built


def build_data(spec: Spec) -> Splits:
    """The spec's dataset splits (built before the model, which may read their shapes)."""
    return Builder(spec, None).make(spec.sections.data)


def build_all(
    spec: Spec, graph: SpecGraph, ctx: Builder
) -> tuple[dict[str, nn.Module], dict[str, Loss], Sampler | None, list[Any]]:
    """Build components (dependencies first), then losses, the sampler and the metrics."""
    sections = spec.sections
    order = [n.split(":", 1)[1] for n in nx.topological_sort(graph.graph) if n.startswith("component:")]
    for name in order:
        ctx.built[name] = ctx.make(sections.components[name])
    problems: list[Problem] = []

    def make(declared: Declared) -> Any:
        """``ctx.make(declared)``, its problems kept so that every loss, the sampler and every metric report theirs."""
        try:
            return ctx.make(declared)
        except SpecError as error:
            problems.extend(error.problems)
            return None

    for name, declared in sections.losses.items():
        ctx.losses[name] = make(declared)
    if problems:  # the sampler and metrics may read losses
        raise SpecError(problems, spec.source)
    sampler = ctx.sampler = make(sections.sampler) if sections.sampler is not None else None
    if problems:  # metrics may read the sampler (a failed one is not a missing one)
        raise SpecError(problems, spec.source)
    metrics = [make(declared) for declared in sections.metrics]
    if problems:
        raise SpecError(problems, spec.source)
    return ctx.built, ctx.losses, sampler, metrics
