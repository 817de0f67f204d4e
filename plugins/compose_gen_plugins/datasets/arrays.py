"""NumPy files: ``npz`` archives and ``npy`` arrays, loaded without unpickling.

``x`` keeps the array's shape after the first (example) dimension; a 1-D array
is one feature per example.  Labels must be non-negative integers; the number of
classes is the largest label + 1.  Object arrays are refused
(``allow_pickle=False``), as are non-numeric and non-finite values.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from compose_gen import BuildContext, ComponentType, Splits
from compose_gen_plugins.datasets.base import DatasetParams, DataSpace, file_error, make_splits, split_fields

__all__ = ["ARRAY_TYPES", "as_features", "as_labels", "require_file"]

PositiveInt = Annotated[int, Field(gt=0)]


class ArrayParams(DatasetParams):
    image_shape: tuple[PositiveInt, PositiveInt, PositiveInt] | None = Field(
        None, description="(C, H, W) to show x as images (as many values as one example has)"
    )
    pixel_max: float = Field(1.0, gt=0.0, description="the data-space value shown as white, e.g. 255 for 8-bit pixels")


class NpzParams(ArrayParams):
    path: Path = Field(..., description="the .npz archive (read without unpickling)")
    x_key: str = Field("x", description="key of the examples x, first dimension the examples")
    y_key: str | None = Field(None, description="key of the labels (non-negative integers), if any")


class NpyParams(ArrayParams):
    path: Path = Field(..., description="the .npy array of examples x, first dimension the examples")
    y_path: Path | None = Field(None, description="a second .npy file with the labels (non-negative integers), if any")


def require_file(path: Path) -> None:
    if not path.is_file():
        raise file_error(path, "no such file" if not path.exists() else "not a regular file")


def as_features(array: np.ndarray, path: Path, what: str = "x") -> Tensor:
    """``array`` as float64 ``(N, *event)``; errors name ``path`` and ``what``."""
    if array.dtype.kind not in "biuf":
        raise file_error(path, f"{what} has dtype {array.dtype}; expected numbers")
    if array.ndim == 0 or len(array) == 0:
        raise file_error(path, f"{what} has shape {array.shape}; expected at least one example")
    if not np.isfinite(array).all():
        first = np.argwhere(~np.isfinite(array))[0]
        raise file_error(path, f"{what} has a non-finite value at index {tuple(int(i) for i in first)}")
    x = torch.as_tensor(np.asarray(array, dtype=np.float64))
    return x[:, None] if x.dim() == 1 else x


def as_labels(array: np.ndarray, path: Path, n: int, what: str = "labels") -> tuple[Tensor, int]:
    """Integer labels ``0..K-1`` of ``n`` examples, and ``K``."""
    if array.shape != (n,):
        raise file_error(path, f"{what} have shape {array.shape}; expected ({n},), one per example")
    if array.dtype.kind not in "iuf" or not np.all(array == np.round(array)) or (array < 0).any():
        raise file_error(path, f"{what} must be non-negative integers")
    y = torch.as_tensor(np.asarray(array, dtype=np.int64))
    return y, int(y.max()) + 1


def _load(path: Path, archive: bool) -> np.ndarray | np.lib.npyio.NpzFile:
    require_file(path)
    kind = ".npz" if archive else ".npy"
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise file_error(path, f"not a readable {kind} file ({error})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile) != archive:
        raise file_error(path, f"is a {'.npz archive' if not archive else '.npy array'}; expected a {kind} file")
    return loaded


def _member(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    if key not in archive.files:
        raise file_error(path, f"has no array {key!r}; it has {sorted(archive.files)}")
    try:
        return archive[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise file_error(path, f"array {key!r} is unreadable ({error})") from None


def _build(p: ArrayParams, x: Tensor, labels: tuple[Tensor, int] | None) -> Splits:
    fields = {"x": x} if labels is None else {"x": x, "y": labels[0]}
    train, test = split_fields(fields, p)
    num_classes = None if labels is None else labels[1]
    space = DataSpace(image_shape=p.image_shape, pixel_max=p.pixel_max, num_classes=num_classes)
    return make_splits(p, train, test, space)


def build_npz(p: NpzParams, ctx: BuildContext | None = None) -> Splits:
    """Arrays ``x_key`` (and ``y_key``) of a NumPy ``.npz`` archive, split with a seeded permutation."""
    with _load(p.path, archive=True) as archive:
        x = as_features(_member(archive, p.x_key, p.path), p.path, p.x_key)
        labels = None if p.y_key is None else as_labels(_member(archive, p.y_key, p.path), p.path, len(x), p.y_key)
    return _build(p, x, labels)


def build_npy(p: NpyParams, ctx: BuildContext | None = None) -> Splits:
    """A NumPy ``.npy`` array as ``x`` (labels from ``y_path``), split with a seeded permutation."""
    x = as_features(_load(p.path, archive=False), p.path)
    labels = None if p.y_path is None else as_labels(_load(p.y_path, archive=False), p.y_path, len(x))
    return _build(p, x, labels)


ARRAY_TYPES = [
    ComponentType("npz", "dataset", NpzParams, build_npz),
    ComponentType("npy", "dataset", NpyParams, build_npy),
]
