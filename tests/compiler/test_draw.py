"""Drawing the spec graph: layers ordered to cross few edges."""

from __future__ import annotations

from itertools import combinations

import networkx as nx

from compose_gen.compiler.draw import _ordered_layers


def crossings(graph: nx.DiGraph, layers: list[list[str]]) -> int:
    """Pairs of edges between the same two adjacent layers that cross."""
    place = {node: (depth, i) for depth, layer in enumerate(layers) for i, node in enumerate(layer)}
    spans = [(place[a], place[b]) for a, b in graph.edges if place[b][0] == place[a][0] + 1]
    return sum(1 for (a1, b1), (a2, b2) in combinations(spans, 2) if a1[0] == a2[0] and (a1[1] - a2[1]) * (b1[1] - b2[1]) < 0)


def test_layers_are_topological_and_ordered_without_needless_crossings() -> None:
    # sorted by name, every net sits across from another network's module
    graph = nx.DiGraph()
    for net, part in [("a.net", "z_decoder"), ("b.net", "y_encoder"), ("c.net", "x_prior")]:
        graph.add_edge(net, part)
        graph.add_edge(part, "loss")
    graph.add_edge("data", "loss")
    layers = _ordered_layers(graph)
    assert [set(layer) for layer in layers] == [{"a.net", "b.net", "c.net", "data"}, {"x_prior", "y_encoder", "z_decoder"}, {"loss"}]
    assert crossings(graph, [sorted(layer) for layer in layers]) == 3
    assert crossings(graph, layers) == 0
    assert _ordered_layers(graph) == layers  # the same picture every time
