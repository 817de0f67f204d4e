"""Drawing a spec graph: DOT text, or PNG/SVG through matplotlib with a layered layout."""

from __future__ import annotations

from pathlib import Path

import networkx as nx

__all__ = ["draw", "to_dot"]

_STYLE = {
    "field": ("ellipse", "#dbeafe"),
    "component": ("box", "#fde68a"),
    "value": ("ellipse", "#e5e7eb"),
    "loss": ("hexagon", "#fecaca"),
    "sampler": ("box", "#bbf7d0"),
}


def _kind(node: str) -> str:
    return node.split(":", 1)[0]


def _label(node: str) -> str:
    return node.split(":", 1)[-1]


def to_dot(graph: nx.DiGraph, title: str) -> str:
    lines = [f'digraph "{title}" {{', "  rankdir=LR;", '  node [style=filled, fontname="Helvetica"];']
    for node in graph.nodes:
        shape, color = _STYLE.get(_kind(node), ("ellipse", "white"))
        lines.append(f'  "{node}" [label="{_label(node)}\\n({_kind(node)})", shape={shape}, fillcolor="{color}"];')
    for a, b in graph.edges:
        lines.append(f'  "{a}" -> "{b}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw(graph: nx.DiGraph, path: Path, title: str) -> None:
    """Write ``graph`` to ``path``; the suffix picks DOT, PNG or SVG."""
    suffix = path.suffix.lower()
    if suffix in (".dot", ".gv"):
        path.write_text(to_dot(graph, title))
        return
    if suffix not in (".png", ".svg"):
        raise ValueError(f"cannot draw to {path.name}: use a .png, .svg or .dot file")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layered = graph.copy()
    for depth, generation in enumerate(nx.topological_generations(layered)):
        for node in generation:
            layered.nodes[node]["layer"] = depth
    positions = nx.multipartite_layout(layered, subset_key="layer")
    width = 2.2 * (1 + max(nx.get_node_attributes(layered, "layer").values(), default=0))
    fig, ax = plt.subplots(figsize=(max(6, width), 5), dpi=120)
    colors = [_STYLE.get(_kind(n), ("", "white"))[1] for n in graph.nodes]
    nx.draw_networkx(
        graph,
        positions,
        ax=ax,
        labels={n: _label(n) for n in graph.nodes},
        node_color=colors,
        node_size=1800,
        font_size=8,
        edgecolors="#374151",
        arrowsize=12,
    )
    ax.set_title(title)
    ax.axis("off")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
