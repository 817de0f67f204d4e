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
    "metric": ("box", "#e9d5ff"),
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
    from matplotlib.patches import Patch

    layered = graph.copy()
    for depth, generation in enumerate(nx.topological_generations(layered)):
        for node in generation:
            layered.nodes[node]["layer"] = depth
    layers = list(nx.get_node_attributes(layered, "layer").values())
    positions = nx.multipartite_layout(layered, subset_key="layer")
    crowd = max((layers.count(layer) for layer in set(layers)), default=1)  # nodes in the fullest layer
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * (1 + max(layers, default=0))), max(4, 0.55 * crowd)), dpi=120)
    labels = {n: _label(n) for n in graph.nodes}
    # each label sits in a box of its kind's colour; arrows stop about half a box short of its centre
    clearance = [(5.0 * len(labels[n]) + 16) ** 2 for n in graph.nodes]  # networkx reads node_size as an area
    nx.draw_networkx_edges(graph, positions, ax=ax, node_size=clearance, arrowsize=12, edge_color="#4b5563")
    for node, (x, y) in positions.items():
        box = {"boxstyle": "round,pad=0.4", "facecolor": _STYLE.get(_kind(node), ("", "white"))[1], "edgecolor": "#374151"}
        ax.text(x, y, labels[node], ha="center", va="center", fontsize=8, bbox=box, zorder=3)
    xs, ys = zip(*positions.values(), strict=True) if positions else ((0.0,), (0.0,))
    ax.set_xlim(min(xs) - 0.12, max(xs) + 0.12)
    ax.set_ylim(min(ys) - 0.08, max(ys) + 0.08)
    kinds = sorted({_kind(n) for n in graph.nodes} & set(_STYLE))
    handles = [Patch(facecolor=_STYLE[k][1], edgecolor="#374151", label=k) for k in kinds]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_title(title)
    ax.axis("off")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
