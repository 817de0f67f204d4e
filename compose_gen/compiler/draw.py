"""Drawing a spec graph: DOT text, or PNG/SVG through matplotlib with a layered layout."""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from compose_gen.compiler.graph import kind_of, name_of
from compose_gen.core.files import replaced_atomically, write_text_atomic

__all__ = ["draw", "to_dot"]

_STYLE = {
    "field": ("ellipse", "#dbeafe"),
    "component": ("box", "#fde68a"),
    "value": ("ellipse", "#e5e7eb"),
    "loss": ("hexagon", "#fecaca"),
    "sampler": ("box", "#bbf7d0"),
    "metric": ("box", "#e9d5ff"),
}


def to_dot(graph: nx.DiGraph, title: str) -> str:
    lines = [f'digraph "{title}" {{', "  rankdir=LR;", '  node [style=filled, fontname="Helvetica"];']
    for node in graph.nodes:
        shape, color = _STYLE.get(kind_of(node), ("ellipse", "white"))
        lines.append(f'  "{node}" [label="{name_of(node)}\\n({kind_of(node)})", shape={shape}, fillcolor="{color}"];')
    for a, b in graph.edges:
        lines.append(f'  "{a}" -> "{b}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _ordered_layers(graph: nx.DiGraph, sweeps: int = 4) -> list[list[str]]:
    """The topological layers, each ordered to cross few edges: barycentre sweeps (Sugiyama et al. 1981).

    Going down, a node moves to the mean place of its predecessors; going up, of
    its successors; a node with none there keeps its place.
    """
    layers = [sorted(layer) for layer in nx.topological_generations(graph)]
    place = {node: i for layer in layers for i, node in enumerate(layer)}
    for _ in range(sweeps):
        for order, neighbours in ((layers[1:], graph.predecessors), (layers[-2::-1], graph.successors)):
            for layer in order:
                centre = {n: _mean([place[m] for m in neighbours(n)], place[n]) for n in layer}
                layer.sort(key=centre.__getitem__)
                place.update({n: i for i, n in enumerate(layer)})
    return layers


def _mean(values: list[float], default: float) -> float:
    return sum(values) / len(values) if values else default


def draw(graph: nx.DiGraph, path: Path, title: str) -> None:
    """Write ``graph`` to ``path``; the suffix picks DOT, PNG or SVG."""
    suffix = path.suffix.lower()
    if suffix in (".dot", ".gv"):
        write_text_atomic(path, to_dot(graph, title))  # a failed write (a full disk) leaves the file there before
        return
    if suffix not in (".png", ".svg"):
        raise ValueError(f"cannot draw to {path.name}: use a .png, .svg or .dot file")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    layers = _ordered_layers(graph)
    positions = {node: (depth, (len(layer) - 1) / 2 - i) for depth, layer in enumerate(layers) for i, node in enumerate(layer)}
    crowd = max(map(len, layers), default=1)  # nodes in the fullest layer
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(layers)), max(4, 0.55 * crowd)), dpi=120)
    texts = {}
    for node, (x, y) in positions.items():  # each label in a box of its kind's colour
        box = {"boxstyle": "round,pad=0.4", "facecolor": _STYLE.get(kind_of(node), ("", "white"))[1], "edgecolor": "#374151"}
        texts[node] = ax.text(x, y, name_of(node), ha="center", va="center", fontsize=8, bbox=box, zorder=3)
    xs, ys = zip(*positions.values(), strict=True) if positions else ((0.0,), (0.0,))
    ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    fig.canvas.draw()  # places the boxes, so that each arrow can run from edge to edge
    for a, b in graph.edges:
        style = {"arrowstyle": "-|>", "mutation_scale": 12, "color": "#4b5563", "patchA": texts[a].get_bbox_patch(), "patchB": texts[b].get_bbox_patch()}
        ax.annotate("", xy=positions[b], xytext=positions[a], arrowprops={**style, "shrinkA": 1, "shrinkB": 1}, zorder=4)
    kinds = sorted({kind_of(n) for n in graph.nodes} & set(_STYLE))
    handles = [Patch(facecolor=_STYLE[k][1], edgecolor="#374151", label=k) for k in kinds]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_title(title)
    ax.axis("off")
    try:
        with replaced_atomically(path) as tmp:
            fig.savefig(tmp, format=suffix[1:], bbox_inches="tight")
    finally:
        plt.close(fig)
