"""Instantiating declarations through their types' ``build(params, ctx)``."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import networkx as nx
from torch import nn

from compose_gen.compiler.advice import advise_paths
from compose_gen.compiler.checks import ContractWatch, enforce
from compose_gen.compiler.graph import SpecGraph, named
from compose_gen.core import Bijector, Loss, Sampler, Splits, offset_seed
from compose_gen.core.bijector import check_constructed
from compose_gen.core.contracts import describe_value
from compose_gen.core.contracts import check_conditions, check_graph_methods, check_loss_terms, check_splits
from compose_gen.core.errors import described
from compose_gen.core.modes import own_modes
from compose_gen.registry import suggest
from compose_gen.spec import Declared, Problem, Spec, SpecError, SpecWarning
from compose_gen.spec.resolve import origin

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
        #: (path, message) of the warnings said, so that a repeated block's copies say theirs once.
        self.warned: set[tuple[Any, str]] = set()

    def component(self, ref: str) -> Any:
        return self.built[ref]

    def rebuild(self, ref: str, index: int) -> Any:
        """Component ``ref`` built again from its declaration, as copy ``index`` of a repeated block (a flow's ``repeat``).

        Copy 0 is ``ref`` as built.  Any other copy is a fresh build, the inline components
        inside it built afresh too (a named component it refers to stays shared, as a name
        means), so each copy draws its own initial values by its type's own initialisation
        (zero-initialised last layers, data-dependent init and the like stay as designed).  A
        ``seed`` parameter becomes ``seed + index * SEED_STRIDE``, so that seeded random
        choices (a random permutation, an autoregressive order) are drawn anew per copy.
        """
        if index == 0:
            return self.built[ref]
        components = self.spec.sections.components
        inside = sorted((n for n, d in components.items() if d.inline and n.startswith(f"{ref}.")), key=lambda n: -n.count("."))
        saved = {name: self.built[name] for name in (*inside, ref) if name in self.built}
        try:
            for name in (*inside, ref):  # the deepest first: an inline component only serves the one holding it
                self.built[name] = self.make(_reseeded(components[name], index))
            return self.built[ref]
        finally:
            self.built.update(saved)

    def loss(self, name: str) -> Loss:
        if name not in self.losses:
            raise ValueError(f"unknown loss {name!r}{suggest(name, self.losses)}; losses: {', '.join(self.losses) or 'none'}")
        return self.losses[name]

    def make(self, declared: Declared) -> Any:
        """Build one declaration, turning a plugin's failure into a located spec error and its warnings into located ones."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                # a copy: a build that appends to a list it was given must not change the spec a run folder records
                built = declared.type.build(declared.params.model_copy(deep=True), self)
            except SpecError:
                raise
            except Exception as error:
                raise self.spec.blame(declared, f"failed to build: {described(error)}{self.spec.catalogue.where_raised(error, declared.type.name)}") from None
        self._pass_on(declared, caught)
        expected = _EXPECTED.get(declared.kind, nn.Module)
        if not isinstance(built, expected):
            raise self.spec.blame(declared, f"built {describe_value(built)}, not a {expected.__name__} as a {declared.kind} must be")
        if isinstance(built, nn.Module):
            enforce(self.spec, declared, check_graph_methods, built)
        if isinstance(built, Bijector):
            enforce(self.spec, declared, check_constructed, built)
        if isinstance(built, Loss):
            enforce(self.spec, declared, check_loss_terms, built)
        if isinstance(built, Sampler):
            enforce(self.spec, declared, check_conditions, built)
        if isinstance(built, Splits):
            enforce(self.spec, declared, check_splits, built)
        if self.watch is not None:
            self.watch.watch(declared, built)
        return built

    def _pass_on(self, declared: Declared, caught: list[warnings.WarningMessage]) -> None:
        """Warn again what ``declared``'s build warned: a :class:`SpecWarning` at ``declared`` (once), others as they were."""
        for warning in caught:
            if not issubclass(warning.category, SpecWarning):
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno, source=warning.source)
            elif warning.message.path is not None:  # already located, by a build nested in this one
                warnings.warn(warning.message, stacklevel=2)
            elif (declared.path, str(warning.message)) not in self.warned:  # a repeated block's copies warn once
                self.warned.add((declared.path, str(warning.message)))
                self.spec.warn(declared.path, f"{origin(declared.type.name, self.spec.catalogue)}: {warning.message}")


#: Copy ``k`` of a repeated component gets ``seed + k * SEED_STRIDE`` (a prime, so that neighbouring seeds do not collide soon).
SEED_STRIDE = 1_000_003


def _reseeded(declared: Declared, index: int) -> Declared:
    """``declared`` with its integer ``seed`` parameter, if any, derived from copy ``index`` (copy 0 keeps it)."""
    seed = getattr(declared.params, "seed", None)
    if index == 0 or not isinstance(seed, int) or isinstance(seed, bool):
        return declared
    return dataclasses.replace(declared, params=declared.params.model_copy(update={"seed": offset_seed(seed, index, SEED_STRIDE, modulus=None)}))


def build_data(spec: Spec) -> Splits:
    """The spec's dataset splits (built before the model, which may read their shapes), under compose_gen's own modes:
    a caller's float64 default dtype made a plugin's ``torch.randn`` data float64, refused as the plugin's fault."""
    advise_paths(spec)
    with own_modes("cpu", grad=False):
        return Builder(spec, None).make(spec.sections.data)


def build_all(
    spec: Spec, graph: SpecGraph, ctx: Builder
) -> tuple[dict[str, nn.Module], dict[str, Loss], Sampler | None, list[Any]]:
    """Build components (dependencies first), then losses, the sampler and the metrics."""
    sections = spec.sections
    order = named(nx.topological_sort(graph.graph), "component")
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
