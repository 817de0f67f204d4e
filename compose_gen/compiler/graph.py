"""The spec as a networkx graph of fields, components, values, losses and terms.

Node ids are ``"<kind>:<name>"``; an edge points from what is needed to what
needs it.  :func:`build_graph` reports unknown names (with "did you mean") and
cycles as spec problems before anything is built.  Without the data,
:func:`assumed_fields` says which names the spec reads as batch fields, so the
graph can be checked (``validate --static``) with those fields assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import networkx as nx

from compose_gen.compiler.expressions import Call, parse_call
from compose_gen.compiler.values import BUILTINS, builtin_misuse
from compose_gen.core.distributions import MAX_DRAWS
from compose_gen.registry import LossRef, RefTo, ValueRef, ref_fields, suggest
from compose_gen.spec import Declared, Problem, Spec, SpecError

__all__ = ["SpecGraph", "assumed_fields", "build_graph", "kind_of", "name_of", "named", "node"]


def node(kind: str, name: str) -> str:
    """The graph's id of ``name``, a ``kind`` (field, value, component, loss, sampler, metric): ``"kind:name"``."""
    return f"{kind}:{name}"


def kind_of(node_id: str) -> str:
    return node_id.split(":", 1)[0]


def name_of(node_id: str) -> str:
    return node_id.split(":", 1)[-1]


def named(node_ids: Iterable[str], kind: str) -> list[str]:
    """The names of the ``kind`` nodes among ``node_ids``, in their order."""
    return [name_of(n) for n in node_ids if kind_of(n) == kind]


@dataclass
class SpecGraph:
    """The spec as a DAG of :func:`node` ids (batch ``fields``, components, graph values, losses, the sampler and
    metrics), an edge from what is needed to what needs it; ``calls`` holds how each graph value is computed."""

    graph: nx.DiGraph
    calls: dict[str, Call]
    fields: tuple[str, ...]

    def ancestors(self, nodes: set[str]) -> set[str]:
        found = set(nodes)
        for n in nodes:
            found |= nx.ancestors(self.graph, n)
        return found

    def values_in_order(self, nodes: set[str]) -> list[str]:
        return named((n for n in nx.topological_sort(self.graph) if n in nodes), "value")


def build_graph(spec: Spec, fields: tuple[str, ...]) -> SpecGraph:
    """Build and check the graph; ``fields`` are the batch's field names."""
    problems: list[Problem] = []
    g = nx.DiGraph()
    components = spec.sections.components
    values = spec.model.graph
    for name in fields:
        g.add_node(node("field", name), path=("data",))
    for name, declared in components.items():
        if name in fields:
            problems.append(Problem(declared.path, _redefined_field(name, fields, "component")))
        g.add_node(node("component", name), path=declared.path)
        _add_refs(g, node("component", name), declared, components, values, fields, problems, spec.sections.losses)

    calls: dict[str, Call] = {}
    known = set(components) | set(values) | set(fields)
    for name, text in values.items():
        path = ("graph", name)
        if name in fields:
            problems.append(Problem(path, _redefined_field(name, fields, "value")))
            continue
        g.add_node(node("value", name), path=path)
        try:
            call = parse_call(text)
        except ValueError as error:
            problems.append(Problem(path, str(error)))
            continue
        misuse = builtin_misuse(call)
        if misuse:
            problems.append(Problem(path, misuse))
            continue
        if call.method is None and call.target in known and call.target not in components and call.target not in BUILTINS:
            kind = "a batch field" if call.target in fields else "a graph value"
            problems.append(Problem(path, f"{call.target!r} is {kind}, not a component: only components and the builtins "
                                          f"{', '.join(sorted(BUILTINS))} are called (a value's methods as {call.target}.method(...))"))
            continue
        # a count written as a float draws as many: q.rsample(1e9) drew 10**9
        if call.method in ("sample", "rsample") and call.args and isinstance(call.args[0], (int, float)) and call.args[0] > MAX_DRAWS:
            problems.append(Problem(path, f"{call} draws more than {MAX_DRAWS:,} samples (MAX_DRAWS) at once"))
            continue
        calls[name] = call
        if call.target in BUILTINS and call.method is None:
            targets = call.args
        else:
            targets = call.names
        for used in targets:
            if not isinstance(used, str):
                continue
            if used not in known:
                problems.append(Problem(path, f"unknown name {used!r}{suggest(used, known | BUILTINS)}{_no_labels(used, fields)}"))
            elif used in components and used in call.args:
                problems.append(Problem(path, f"{used!r} is a component, not a value: a call's arguments are graph values, batch fields "
                                              f"or numbers (to pass its output, compute a value as {used}(...) and name that)"))
            else:
                g.add_edge(_node_of(used, components, values), node("value", name))

    for name, declared in spec.sections.losses.items():
        g.add_node(node("loss", name), path=declared.path)
        _add_refs(g, node("loss", name), declared, components, values, fields, problems, spec.sections.losses)
    if spec.sections.sampler is not None:
        g.add_node("sampler", path=("sample",))
        _add_refs(g, "sampler", spec.sections.sampler, components, values, fields, problems, spec.sections.losses)
    for i, declared in enumerate(spec.sections.metrics):  # a metric's values are checked like any others
        metric = node("metric", f"{declared.type.name}[{i}]")
        g.add_node(metric, path=declared.path)
        _add_refs(g, metric, declared, components, values, fields, problems, spec.sections.losses)
        if not g.in_degree(metric):  # it reads nothing from the graph: leave it out of the picture
            g.remove_node(metric)

    try:
        cycle = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        names = [name_of(edge[0]) for edge in cycle] + [name_of(cycle[0][0])]
        path = g.nodes[cycle[0][0]].get("path", ())
        problems.append(Problem(path, f"cycle: {' -> '.join(names)}"))
    if problems:
        raise SpecError(problems, spec.source)
    return SpecGraph(g, calls, fields)


def assumed_fields(spec: Spec) -> tuple[str, ...]:
    """The names ``spec`` reads as data without defining them: the batch fields it needs from its dataset.

    A plain call's target is a component or a builtin, never a field, so a
    misspelt component there is still an unknown name.
    """
    defined = set(spec.sections.components) | set(spec.model.graph) | set(BUILTINS)
    read: list[str] = []
    for text in spec.model.graph.values():
        try:
            call = parse_call(text)
        except ValueError:
            continue  # build_graph reports it
        read += [a for a in (call.args if call.method is None else (call.target, *call.args)) if isinstance(a, str)]
    parts = [*spec.sections.components.values(), *spec.sections.losses.values(), *spec.sections.metrics]
    for declared in parts + ([spec.sections.sampler] if spec.sections.sampler is not None else []):
        for field, marker in ref_fields(type(declared.params)):
            value = getattr(declared.params, field)
            if isinstance(marker, ValueRef) and value is not None:
                read += value if isinstance(value, list) else [value]
    return tuple(sorted(set(read) - defined))


def _no_labels(name: str, fields: tuple[str, ...]) -> str:
    """Why ``y`` is unknown when the data give no labels, and how data give them."""
    if name != "y" or "y" in fields:
        return ""
    return (
        f" (the data give the fields {', '.join(sorted(fields))} and no labels y: an image folder gives them with one "
        "sub-folder per class, a csv with `label:`, an npz with `y_key:`)"
    )


def _redefined_field(name: str, fields: tuple[str, ...], what: str) -> str:
    return f"{name!r} is a batch field (the data gives {', '.join(fields)}) and cannot be redefined; give this {what} another name"


def _node_of(name: str, components: dict[str, Declared], values: dict[str, str]) -> str:
    if name in components:
        return node("component", name)
    if name in values:
        return node("value", name)
    return node("field", name)


def _add_refs(
    g: nx.DiGraph,
    target: str,
    declared: Declared,
    components: dict[str, Declared],
    values: dict[str, str],
    fields: tuple[str, ...],
    problems: list[Problem],
    losses: Mapping[str, Declared],
) -> None:
    """Edges from every component or value ``declared`` refers to."""
    for field, marker in ref_fields(type(declared.params)):
        value = getattr(declared.params, field)
        if value is None:
            continue
        is_list = isinstance(value, list)
        for i, name in enumerate(value if is_list else [value]):
            path = (*declared.path, field, i) if is_list else (*declared.path, field)
            if isinstance(marker, RefTo):
                g.add_edge(node("component", name), target)
            elif isinstance(marker, LossRef):  # the name itself was checked with the spec
                g.add_edge(node("loss", name), target)
            elif isinstance(marker, ValueRef):
                if name in values or name in fields:
                    g.add_edge(_node_of(name, components, values), target)
                elif name in components:  # was "unknown value 'critic'", though the spec defines it
                    problems.append(Problem(path, f"{name!r} is a component, not a value: to pass its output, compute a value as {name}(...) under graph: and name that"))
                elif name in losses:
                    problems.append(Problem(path, f"{name!r} is a loss, not a value: name a graph value or batch field ({', '.join(sorted(set(values) | set(fields)))})"))
                else:
                    known = set(values) | set(fields)
                    unset = field not in declared.params.model_fields_set  # the plugin's default, not the spec's word
                    default = f" (type {declared.type.name!r} defaults {field} to it: set {field})" if unset else ""
                    problems.append(
                        Problem(path, f"unknown value {name!r}{default}{suggest(name, known)} (graph values and batch fields: {', '.join(sorted(known))})")
                    )
