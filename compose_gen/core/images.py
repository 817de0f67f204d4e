"""Writing samples as pictures: image grids with Pillow, 2D scatter and density plots with matplotlib.

Shared by the run folder (sample grids) and by metric plugins that draw what they measure.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from compose_gen.core.files import make_parent, replaced_atomically

__all__ = ["MAX_PICTURES", "class_columns", "save_grid", "save_point_sets", "save_scatter"]

#: The most images one grid holds, 100 × 100: a setting asking for more is a slip, refused before training.
MAX_PICTURES = 10_000


def class_columns(n: int, classes: int | None) -> int | None:
    """Columns of a grid of ``n`` samples drawn by class (sample i of class i mod ``classes``); None for no classes.

    A multiple of ``classes``, so each column holds one class, near sqrt(n), so that a
    few classes still give a roughly square grid (2 classes, 64 samples: 8 columns, not 2).
    """
    if not classes:
        return None
    return classes * max(1, round(math.sqrt(n) / classes))


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None, scale: int = 4, pad: int = 1) -> Path:
    """Save ``(N, C, H, W)`` images with values in [0, 1] as one PNG grid of ``nrow`` images a row.

    C = 1 is drawn grey and C = 3 in colour; any other C draws each channel of an image as
    its own grey tile, the image's C channels side by side (``nrow * C`` tiles a row).
    """
    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    if c not in (1, 3):  # tile i * C + k is channel k of image i
        images, n, c, nrow = images.reshape(n * c, 1, h, w), n * c, 1, nrow * c
    rows = math.ceil(n / nrow)
    grid = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = images[i]
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    picture = Image.fromarray(array[..., 0] if c == 1 else array)  # uint8: grey (H, W) or RGB (H, W, 3)
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    path = _writable_picture(path, (suffix.lstrip(".") for suffix in Image.registered_extensions()))
    with replaced_atomically(path) as tmp:
        picture.save(tmp, format=Image.registered_extensions()[path.suffix.lower()])
    return path


def save_scatter(
    points: Tensor,
    path: str | Path,
    reference: Tensor | None = None,
    title: str = "",
    labels: Tensor | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Save 2D ``points`` as a PNG: a scatter plot over the ``reference`` points (grey), and their density.

    The density panel is a 2D histogram of the points over the same square as the
    scatter plot.  Points drawn by class are coloured by their ``labels``, which the
    legend calls by their ``class_names`` where given.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = points.detach().float().cpu().numpy()
    ref = reference.detach().float().cpu().numpy() if reference is not None else None
    limits = _limits(ref if ref is not None else pts)
    fig, (scatter, density) = plt.subplots(1, 2, figsize=(8, 4), dpi=100)
    if ref is not None:
        scatter.scatter(ref[:, 0], ref[:, 1], s=2, c="0.75", label="data")
    if labels is not None:
        label = labels.cpu().numpy()
        palette = plt.get_cmap("tab10" if label.max() < 10 else "tab20")
        scatter.scatter(pts[:, 0], pts[:, 1], s=2, c=palette(label % palette.N))
        handles = _class_handles(palette, sorted(set(label.tolist())), class_names)
        scatter.legend(*handles, fontsize="x-small", markerscale=3, loc="best")
    else:
        scatter.scatter(pts[:, 0], pts[:, 1], s=2, c="tab:blue", label="samples")
    shown = pts[np.isfinite(pts).all(axis=1)]
    density.hist2d(shown[:, 0], shown[:, 1], bins=60, range=limits, cmap="magma")
    for ax, name in ((scatter, "samples over data"), (density, "sample density")):
        _frame(ax, limits, f"{title}  {name}".strip())
    return _save_figure(fig, path)


def save_point_sets(sets: Mapping[str, Tensor], path: str | Path, title: str = "") -> Path:
    """Save named sets of 2D points as one scatter plot, a colour and a legend entry each (e.g. a, G_ab(a) and b)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arrays = {name: points.detach().float().cpu().numpy().reshape(-1, 2) for name, points in sets.items()}
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    palette = plt.get_cmap("tab10")
    for k, (name, pts) in enumerate(arrays.items()):
        ax.scatter(pts[:, 0], pts[:, 1], s=2, color=palette(k % palette.N), label=name)
    ax.legend(fontsize="x-small", markerscale=3, loc="best")
    _frame(ax, _limits(np.concatenate(list(arrays.values()))), title)
    return _save_figure(fig, path)


def _limits(points: np.ndarray) -> list[tuple[float, float]]:
    """The square around the finite ``points`` with a 10% margin, as (x, y) ranges."""
    finite = points[np.isfinite(points).all(axis=1)]
    low, high = (finite.min(0), finite.max(0)) if len(finite) else (np.full(2, -1.0), np.full(2, 1.0))
    pad = 0.1 * np.maximum(high - low, 1e-6)
    return [(low[i] - pad[i], high[i] + pad[i]) for i in range(2)]


def _frame(ax: Any, limits: list[tuple[float, float]], title: str) -> None:
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])
    ax.set_aspect("equal")
    ax.set_title(title)


def _save_figure(fig: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        path = _writable_picture(path, fig.canvas.get_supported_filetypes())
        with replaced_atomically(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".").lower(), bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _class_handles(
    palette: Any, classes: list[int], names: Sequence[str] | None = None, shown: int = 10
) -> tuple[list[Any], list[str]]:
    """Legend entries for the first ``shown`` of the ``classes`` drawn, by name where ``names`` has one."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", ms=2, color=palette(k % palette.N)) for k in classes[:shown]]
    return handles, [str(names[k]) if names and k < len(names) else f"class {k}" for k in classes[:shown]]


def _writable_picture(path: str | Path, formats: Iterable[str]) -> Path:
    """``path``, as ``.png`` when it names no format, with its folder made; an existing folder, or a suffix not
    among ``formats`` (without dots), is an error."""
    folder = str(path).endswith(("/", os.sep))  # "out/": a folder meant, though none is there yet
    path = Path(path)
    if path.is_dir() or folder:
        raise IsADirectoryError(f"{path} is a folder; give a file name such as {path / 'samples.png'}")
    if not path.suffix:
        path = path.with_suffix(".png")
    if path.suffix.lower().lstrip(".") not in formats:
        raise ValueError(f"cannot write samples to {path}: give a picture (.png, .jpg, ...) or, for the arrays, .npy or .npz")
    make_parent(path)
    return path
