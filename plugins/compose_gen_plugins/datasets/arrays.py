"""NumPy files: ``npz`` archives and ``npy`` arrays, loaded without unpickling.

``x`` keeps the array's shape after the first (example) dimension; a 1-D array
is one feature per example.  With ``image_shape`` (C, H, W), examples are flat or
of that shape (refused otherwise: the pictures would scramble them), except that
grey ``(N, H, W)`` images with ``image_shape`` (1, H, W) get their channel axis.
Every value must be finite and within float32's range.  Labels must be non-negative integers; the number of classes is the
largest label + 1, at most ``MAX_CLASSES`` (:mod:`.limits`).  Object arrays are
refused (``allow_pickle=False``), as are non-numeric values and files that are
not .npy/.npz at all (checked by their first bytes, so they are not mistaken for
pickles).  Errors name the file and, for a bad value, its index: ``x[3, 1]``.
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Annotated, BinaryIO

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from compose_gen import BuildContext, ComponentType, SpecWarning, Splits, hookimpl
from compose_gen_plugins.datasets.base import DatasetParams, DataSpace, file_error, image_shape_problem, make_splits, split_fields
from compose_gen_plugins.datasets.limits import BEYOND_FLOAT32, element, float32_overflow, too_many_classes

__all__ = ["as_features", "as_labels", "compose_gen_types", "require_file"]

PositiveInt = Annotated[int, Field(gt=0)]


class ArrayParams(DatasetParams):
    image_shape: tuple[PositiveInt, PositiveInt, PositiveInt] | None = Field(
        None,
        description="(C, H, W) to show x as images: x is (N, C, H, W), flat (N, C·H·W), or (N, H, W) given its channel axis when C is 1",
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
    """``array`` as float64 ``(N, *event)``, every value finite in float32; errors name ``path`` and the value."""
    if array.dtype.kind not in "biuf":
        raise file_error(path, f"{what} has dtype {array.dtype}; expected numbers")
    if array.ndim == 0 or array.size == 0:
        raise file_error(path, f"{what} has shape {array.shape}, no values; expected at least one example")
    _refuse_first(array, ~np.isfinite(array), path, what, "not a finite number")
    with np.errstate(over="ignore"):  # a long double beyond float64 becomes inf, found just below
        x = torch.as_tensor(np.asarray(array, dtype=np.float64))
    overflow = float32_overflow(x)
    if overflow is not None:
        raise file_error(path, f"{element(what, overflow)} = {array[overflow].item()}: {BEYOND_FLOAT32}")
    return x[:, None] if x.dim() == 1 else x


def as_labels(array: np.ndarray, path: Path, n: int, what: str = "labels") -> tuple[Tensor, int]:
    """Integer labels ``0..K-1`` of ``n`` examples, and ``K`` (the largest label + 1, at most ``MAX_CLASSES``)."""
    if array.shape != (n,):
        raise file_error(path, f"the {what} array has shape {array.shape}; expected ({n},), one per example")
    if array.dtype.kind not in "iuf":
        raise file_error(
            path, f"the {what} array has dtype {array.dtype}; labels must be non-negative integers (a csv numbers named classes for you)"
        )
    not_class_index = ~np.isfinite(array) | (array != np.round(array)) | (array < 0)
    _refuse_first(array, not_class_index, path, what, "labels must be non-negative integers")
    largest = int(array.argmax())
    problem = too_many_classes(int(array[largest]))
    if problem is not None:
        raise file_error(path, f"{element(what, (largest,))}: {problem}")
    return torch.as_tensor(array.astype(np.int64)), int(array[largest]) + 1


def _refuse_first(array: np.ndarray, bad: np.ndarray, path: Path, what: str, problem: str) -> None:
    """Raise ``"<path>: x[1, 0] = nan: <problem>"`` for the first ``bad`` value of ``array``, if any."""
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise file_error(path, f"{element(what, index)} = {array[index].item()}: {problem}")


#: How each kind of NumPy file begins: the .npy magic string, or a zip archive's local or empty-archive header.
_MAGIC = {".npy": (np.lib.format.MAGIC_PREFIX,), ".npz": (b"PK\x03\x04", b"PK\x05\x06")}


def _load(path: Path, archive: bool) -> np.ndarray | np.lib.npyio.NpzFile:
    require_file(path)
    kind = ".npz" if archive else ".npy"
    _require_magic(path, kind)
    with path.open("rb") as handle:
        problem = _size_problem(handle, os.fstat(handle.fileno()).st_size, exact=True)
    if problem:
        raise file_error(path, problem)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise file_error(path, f"not a readable {kind} file ({error})") from None
    except MemoryError as error:  # a header that declares more than the file holds, or than memory does
        raise file_error(path, f"declares an array larger than memory ({error})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile) != archive:
        raise file_error(path, f"is a {'.npz archive' if not archive else '.npy array'}; expected a {kind} file")
    return loaded


def _require_magic(path: Path, kind: str) -> None:
    """Refuse a file that is neither a .npy array nor a .npz archive, before NumPy guesses it is a pickle."""
    try:
        with path.open("rb") as handle:
            start = handle.read(len(np.lib.format.MAGIC_PREFIX))
    except OSError as error:
        raise file_error(path, f"cannot be read ({error})") from None
    if not start.startswith(tuple(magic for magics in _MAGIC.values() for magic in magics)):
        expected = " or ".join(repr(magic) for magic in _MAGIC[kind])
        found = f"it starts with {start!r}" if start else "it is empty"
        raise file_error(path, f"not a readable {kind} file: {found}, not {expected}")


def _member(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    if key not in archive.files:
        raise file_error(path, f"has no array {key!r}; it has {sorted(archive.files)}")
    info = archive.zip.getinfo(key if key in archive.zip.namelist() else f"{key}.npy")  # the member NumPy reads
    try:
        most = _most_unpacked(info, path.stat().st_size)
        with archive.zip.open(info) as handle:  # the stated size is exact unless forged beyond what the packed bytes hold
            problem = _size_problem(handle, most, exact=most == info.file_size)
        if problem is None:
            member = archive[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as error:
        # NotImplementedError: a compression zipfile does not know; RuntimeError: an encrypted member
        raise file_error(path, f"array {key!r} is unreadable ({str(error) or type(error).__name__})") from None
    except MemoryError as error:
        raise file_error(path, f"array {key!r} declares more than memory holds ({error})") from None
    if problem:
        raise file_error(path, f"array {key!r} {problem}")
    if not isinstance(member, np.ndarray):  # NumPy hands back the raw bytes of a member that is not a .npy file
        raise file_error(path, f"array {key!r} is not a .npy array: its member starts with {member[:16]!r}")
    return member


#: The most a deflated zip member can unpack to per packed byte (deflate's limit is about 1032:1).
_DEFLATE_RATIO = 1032


def _most_unpacked(info: zipfile.ZipInfo, archive_size: int) -> int:
    """The most bytes a zip member can hold: its stated size, which a forged archive can inflate, bounded by what its
    packed bytes (no more than the archive holds) can unpack to, where that is known: stored, or deflated (bzip2 and
    lzma reach far higher ratios)."""
    packed = min(info.compress_size, archive_size)
    ratio = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: _DEFLATE_RATIO}.get(info.compress_type)
    return info.file_size if ratio is None else min(info.file_size, packed * ratio)


def _size_problem(handle: BinaryIO, size: int, exact: bool) -> str | None:
    """What is wrong when a .npy header (read from ``handle``, ``size`` bytes in all, or at most, unless ``exact``)
    declares more data than follows, or (``exact``) less.

    NumPy allocates what the header declares before it reads: on a machine that overcommits memory a lying header
    gets a vast allocation rather than a ``MemoryError``.  And it reads only what the header declares: arrays saved
    one after another to one file (``np.save`` to one handle) would be read as the first alone.  What is not a .npy
    header of a version NumPy reads (an archive, a member that is not an array) or one it cannot parse is left to
    ``np.load`` to name.
    """
    try:
        version = np.lib.format.read_magic(handle)
        if version not in ((1, 0), (2, 0), (3, 0)):
            return None
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(handle)
    except ValueError:
        return None
    declared, held = math.prod(shape) * dtype.itemsize, size - handle.tell()
    said = f"declares {math.prod(shape)} {dtype} values ({declared:,} bytes) in shape {shape}, but holds {held:,} bytes of data"
    if dtype.hasobject or declared == held or (declared < held and not exact):
        return None
    if declared < held:
        return f"{said}: more follows the array (several arrays saved to one file?); save one array per .npy, or several in an .npz"
    return f"{said}: the file is cut short or its header is wrong"


def _with_channel_axis(x: Tensor, image_shape: tuple[int, ...] | None) -> Tensor:
    """``x`` of shape ``(N, H, W)`` as ``(N, 1, H, W)`` when ``image_shape`` is ``(1, H, W)``: grey images saved without
    their channel axis, which the conv networks need; any other ``x`` as it is."""
    if image_shape is not None and image_shape[0] == 1 and tuple(x.shape[1:]) == tuple(image_shape[1:]):
        return x[:, None]
    return x


def _build(p: ArrayParams, x: Tensor, labels: tuple[Tensor, int] | None, path: Path) -> Splits:
    x = _with_channel_axis(x, p.image_shape)
    problem = image_shape_problem(tuple(x.shape[1:]), p.image_shape)
    if problem is not None:
        raise file_error(path, problem)
    brightest = float(x.max()) if p.image_shape is not None and x.numel() else 0.0
    if brightest > p.pixel_max:
        warnings.warn(
            SpecWarning(
                f"{path}: values reach {brightest:g}, above pixel_max {p.pixel_max:g}, the value shown as white, so pictures "
                "of the data and of samples clip every brighter pixel to white (8-bit pixels want pixel_max: 255)"
            ),
            stacklevel=2,
        )
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
    return _build(p, x, labels, p.path)


def build_npy(p: NpyParams, ctx: BuildContext | None = None) -> Splits:
    """A NumPy ``.npy`` array as ``x`` (labels from ``y_path``), split with a seeded permutation."""
    x = as_features(_load(p.path, archive=False), p.path)
    labels = None if p.y_path is None else as_labels(_load(p.y_path, archive=False), p.y_path, len(x))
    return _build(p, x, labels, p.path)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("npz", "dataset", NpzParams, build_npz),
        ComponentType("npy", "dataset", NpyParams, build_npy),
    ]
