"""What a dataset's values must fit: float32 features (the model computes in float32) and a bounded class count.

Files are read and transformed in float64, then stored in float32; a finite
value beyond float32's range (about ±3.4e38) would silently become ``±inf``
there, so it is refused where it is read (naming the file and where in it) or
where a transform produces it.  Integer class labels index ``0..K-1`` with
``K = largest label + 1``; ``K`` above :data:`MAX_CLASSES` is refused rather than
letting a stray huge label make a metric allocate a ``K``-sized table.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from compose_gen.core import MAX_CLASSES

__all__ = [
    "BEYOND_FLOAT32",
    "FLOAT32_MAX",
    "MAX_CLASSES",
    "constant_features",
    "continuous_density_caveat",
    "element",
    "few_values",
    "float32_overflow",
    "not_in_data_space",
    "too_many_classes",
]

FLOAT32_MAX = torch.finfo(torch.float32).max
#: What is wrong with a value that :func:`float32_overflow` finds.
BEYOND_FLOAT32 = f"beyond float32's range (±{FLOAT32_MAX:.2g}), in which the model computes"


def constant_features(x: Tensor) -> str | None:
    """``"2 feature(s) ... (flat index 3, 7)"`` when some features of ``x`` (examples along dim 0) are constant, else None.

    A density fitted there can grow without bound (a learned scale shrinking to 0).
    """
    x = x.flatten(1)
    constant = (x == x[:1]).all(0).nonzero().flatten().tolist()
    if not constant or len(x) < 2:
        return None
    shown = ", ".join(map(str, constant[:5])) + (", …" if len(constant) > 5 else "")
    return f"{len(constant)} feature(s) are constant in the train split (flat index {shown})"


#: Examples :func:`few_values` looks at: enough to see a grid, few enough to stay quick on large data.
_LOOKED_AT = 2000


def few_values(x: Tensor) -> str | None:
    """``"the data take only 17 distinct values (0..0.94)"`` when ``x`` (examples along dim 0) lie on a grid of at most 256, else None."""
    x = x[:_LOOKED_AT].flatten(1)
    values = torch.unique(x)
    if len(values) <= 256 and x.numel() >= 8 * len(values):
        if len(values) == 1:
            return f"the data take a single value ({values[0].item():g})"
        return f"the data take only {len(values)} distinct values ({values[0].item():g}..{values[-1].item():g})"
    return None


def continuous_density_caveat(x: Tensor) -> str | None:
    """Why a continuous density's likelihood of ``x`` (examples along dim 0) would be unbounded, or None.

    On data that take a few values, or on a feature that is constant, a density can
    grow without bound at those points, so its NLL falls forever and bits/dim are no
    bound on the discrete data's (Theis et al. 2016); dequantization fills each bin.
    """
    return few_values(x) or constant_features(x[:_LOOKED_AT])


def not_in_data_space(value: str) -> str:
    """Why a likelihood of the graph value ``value`` (not a field of the data) is not one of the data.

    The data's scaling and transforms have a log-determinant from data space to the
    fields they produce; a value computed in the graph has none of them, so its NLL
    and bits/dim are quoted as the model sees that value.
    """
    return (
        f"it models the graph value {value!r}, not a field of the data, so the NLL and bits/dim are of "
        "that value as the model sees it, without the log-determinant of the data's scaling and transforms"
    )


def float32_overflow(x: Tensor, chunk: int = 2**22) -> tuple[int, ...] | None:
    """Index of the first value of ``x`` that is not finite in float32 (e.g. ``1e39``, ``inf``), or ``None``; looked for
    ``chunk`` values at a time, so the check holds no float32 copy of all of ``x``."""
    if not x.is_floating_point():  # every integer type fits float32's range
        return None
    flat = x.reshape(-1)
    for start in range(0, len(flat), chunk):
        hits = (~torch.isfinite(flat[start : start + chunk].to(torch.float32))).nonzero()
        if len(hits):
            return tuple(int(i) for i in np.unravel_index(start + int(hits[0]), tuple(x.shape)))
    return None


def element(name: str, index: tuple[int, ...]) -> str:
    """How messages name one value of an array: ``x[3, 1]``."""
    return f"{name}[{', '.join(str(i) for i in index)}]"


def too_many_classes(largest: int) -> str | None:
    """Why ``largest`` cannot be the largest class label, or ``None`` when ``largest + 1`` classes are fine."""
    if largest < MAX_CLASSES:
        return None
    return (
        f"labels go up to {largest}, which would make {largest + 1} classes (0..{largest}); at most "
        f"{MAX_CLASSES} are supported: number the classes 0..K-1"
    )
