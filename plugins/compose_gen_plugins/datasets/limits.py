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
    "FLOAT32_ROUNDS_TO_INF",
    "MAX_CLASSES",
    "element",
    "float32_overflow",
    "too_many_classes",
]

FLOAT32_MAX = torch.finfo(torch.float32).max
#: The smallest double that rounds to infinity in float32: halfway between FLOAT32_MAX = 2¹²⁸ − 2¹⁰⁴ and 2¹²⁸, a tie
#: that rounds to the even 2¹²⁸.
FLOAT32_ROUNDS_TO_INF = 2.0**128 - 2.0**103
#: What is wrong with a value that :func:`float32_overflow` finds.
BEYOND_FLOAT32 = f"beyond float32's range (±{FLOAT32_MAX:.2g}), in which the model computes"


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
