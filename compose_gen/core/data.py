"""The data contract between dataset plugins, the compiler and the trainer.

A dataset plugin returns :class:`Splits`: a train and a test :class:`TensorData`.
Each holds named fields (``x``, ``y``, or ``a``/``b`` for two domains) as tensors
whose first dimension indexes examples.  Graph values and losses refer to these
field names directly.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import Tensor

__all__ = ["MAX_CLASSES", "Batch", "Splits", "TensorData", "first_flagged"]

#: The most classes integer labels may make (largest label + 1), so no table sized by a class count explodes.
MAX_CLASSES = 10_000

#: A batch maps field names to tensors whose first dimension is the batch.
Batch = Mapping[str, Tensor]


def _identity(x: Tensor) -> Tensor:
    return x


def first_flagged(values: Tensor, flagged: Tensor) -> tuple[int, float]:
    """The first example (along dim 0) of ``values`` with a ``flagged`` entry, and that entry's value, to name in an error."""
    flagged, values = flagged.reshape(len(flagged), -1), values.reshape(len(values), -1)
    example = int(flagged.any(1).nonzero()[0])
    return example, values[example][flagged[example]][0].item()


@dataclass
class TensorData:
    """An in-memory dataset of named tensor fields.

    ``image_shape`` is ``(C, H, W)`` when ``x`` can be shown as images;
    ``to_display`` maps model-space ``x`` back to ``[0, 1]`` pixels, and
    ``ladj_to_model`` is the per-example log-determinant of the preprocessing
    (data space → model space) that a likelihood in data space must add back,
    e.g. ``-D·log 16`` for pixels in ``0..16`` scaled to ``[0, 1]``.
    ``to_model``, when the dataset offers it, maps new examples from data space
    (the values its files hold) as the stored ``x`` was mapped: ``(x, ladj)`` with
    ``ladj`` per example, ``ladj_to_model`` and any per-example part included.
    """

    fields: dict[str, Tensor]
    image_shape: tuple[int, ...] | None = None
    to_display: Callable[[Tensor], Tensor] = _identity
    ladj_to_model: float = 0.0
    #: Number of classes of the ``y`` field, when it has labels.
    num_classes: int | None = None
    meta: dict[str, object] = field(default_factory=dict)
    to_model: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None
    #: :meth:`fingerprint` of the data as read, before the spec's transforms (``make_splits`` sets it): a fitted
    #: transform (``standardise``) maps a rescaled file to the same ``fields``, which alone would not tell them apart.
    source: str = ""

    def __post_init__(self) -> None:
        sizes = {name: len(t) for name, t in self.fields.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"dataset fields have different lengths: {sizes}")

    def __len__(self) -> int:
        return len(next(iter(self.fields.values())))

    def fingerprint(self, with_source: bool = True) -> str:
        """SHA-256 of every field's name, dtype, shape and values, and of the data they were made from (:attr:`source`):
        whether two builds gave the same examples in the same order.  ``with_source=False``: of the fields alone, as
        checkpoints before the source counted recorded it."""
        digest = hashlib.sha256()
        for name in sorted(self.fields):
            value = _packed(self.fields[name].detach().cpu())
            digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
            digest.update(value.view(torch.uint8).numpy() if value.numel() else b"")  # hashed in place, no byte copy
        if with_source and self.source:
            digest.update(f"source:{self.source};".encode())
        return digest.hexdigest()

    def event_shape(self, name: str = "x") -> torch.Size:
        return self.fields[name].shape[1:]

    @property
    def dims(self) -> int:
        """Number of dimensions of one ``x``, used for bits per dimension."""
        return math.prod(self.event_shape("x"))

    def batch(self, index: Tensor | slice) -> dict[str, Tensor]:
        return {name: t[index] for name, t in self.fields.items()}

    def classes(self) -> int | None:
        """How many classes the integer labels ``y`` index: ``num_classes``, else the largest label + 1; None without labels."""
        y = self.fields.get("y")
        if self.num_classes is not None or y is None or y.is_floating_point() or y.numel() == 0:
            return self.num_classes
        return int(y.max()) + 1


def _packed(value: Tensor) -> Tensor:
    """``value`` in row-major order with a last stride of 1, which ``view(torch.uint8)`` needs: ``contiguous()`` alone
    leaves the stride of a size-1 dimension as it was (a 1x1 RGB image, a Fortran-ordered array ending in 1), so such a
    tensor is copied; any other contiguous one is not."""
    value = value.contiguous()
    if value.dim() and value.stride(-1) != 1:
        return value.clone(memory_format=torch.contiguous_format)
    return value


@dataclass
class Splits:
    """The train and test halves of a dataset, split by the plugin (fixed, seeded)."""

    train: TensorData
    test: TensorData
