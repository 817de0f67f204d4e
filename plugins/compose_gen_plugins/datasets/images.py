"""Image files: a folder of images (Pillow) and MNIST's IDX format.

Both give ``x`` as ``(N, C, H, W)`` (or flat with ``shape: flat``) of 8-bit
pixels, divided by 255 into ``[0, 1]`` with ``scale: true`` (log-determinant
``-D·log 255``).  For ``dequantize`` keep ``scale: false`` (integers 0..255,
``levels: 256``).  Images of more bits per channel (16-bit PNGs, float TIFFs)
are refused rather than clipped.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch
from PIL import Image, ImageMode, ImageOps
from pydantic import Field, model_validator
from torch import Tensor

from compose_gen import BuildContext, ComponentType, SpecWarning, Splits, hookimpl
from compose_gen.registry import listed
from compose_gen_plugins.datasets.arrays import PositiveInt, as_labels, require_file
from compose_gen_plugins.datasets.base import DatasetError, DataSpace, ImageParams, file_error, make_splits, split_fields

__all__ = ["compose_gen_types", "read_idx"]

PIXEL_MAX = 255.0
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


class EightBitParams(ImageParams):
    scale: bool = Field(True, description="divide pixels by 255 into [0, 1] (log-determinant -D·log 255)")


def _image_splits(p: EightBitParams, train: dict[str, Tensor], test: dict[str, Tensor], space: DataSpace) -> Splits:
    """Scale and shape 8-bit ``(N, C, H, W)`` images, then build the splits."""
    space.image_shape, space.raw_levels = tuple(train["x"].shape[1:]), int(PIXEL_MAX) + 1
    if p.scale:
        space.ladj_to_model = -math.prod(space.image_shape) * math.log(PIXEL_MAX)
    else:
        space.pixel_max = PIXEL_MAX

    def from_raw(raw: Tensor) -> Tensor:
        """8-bit ``(N, C, H, W)`` images, scaled and shaped as the spec asks."""
        raw = raw / PIXEL_MAX if p.scale else raw
        return raw.flatten(1) if p.shape == "flat" else raw

    space.from_raw = from_raw
    for half in (train, test):
        half["x"] = from_raw(half["x"])
    return make_splits(p, train, test, space)


# --- image folders


class ImageFolderParams(EightBitParams):
    root: Path = Field(..., description="folder of 8-bit images, or of one subfolder of images per class (labels y)")
    mode: Literal["grayscale", "rgb"] = Field("rgb", description="channels read: grayscale (C = 1) or rgb (C = 3)")
    size: tuple[PositiveInt, PositiveInt] | None = Field(
        None, description="(H, W) to resize every image to; without it all images must have one size"
    )


def _image_files(folder: Path, recursive: bool) -> list[Path]:
    """The image files in ``folder`` (and below it), hidden ones left out; a link to an image or folder that is gone is an error."""
    candidates = [
        path
        for path in (folder.rglob("*") if recursive else folder.iterdir())
        if not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]
    _refuse_dangling(candidates)
    return sorted(path for path in candidates if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())


def _refuse_dangling(paths: list[Path]) -> None:
    """A link to an image, or to what may have been a folder of them (no suffix), whose target is gone: leaving it out
    would change the data, and for a class folder the labels, without a word."""
    for path in paths:
        if path.is_symlink() and not path.exists() and (path.suffix == "" or path.suffix.lower() in IMAGE_SUFFIXES):
            raise file_error(path, f"is a symbolic link to {os.readlink(path)}, which does not exist")


def _find_images(root: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """Image paths in sorted order; with class subfolders, their labels and the class names."""
    if not root.is_dir():
        raise file_error(root, "no such folder" if not root.exists() else "not a folder")
    loose = _image_files(root, recursive=False)  # refuses a dangling link to a class folder too
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = [(d.name, files) for d in folders if (files := _image_files(d, recursive=True))]
    if classes and loose:
        raise file_error(root, f"has images both in class folders and directly inside ({loose[0].name})")
    empty = [d.name for d in folders if d.name not in {name for name, _ in classes}]
    if classes and empty:
        warnings.warn(
            SpecWarning(
                f"class folder(s) {', '.join(empty)} of {root} hold no images and are left out, so the classes are "
                f"{', '.join(name for name, _ in classes)}, labelled 0..{len(classes) - 1} in that order"
            ),
            stacklevel=2,
        )
    if classes:
        paths = [path for _, files in classes for path in files]
        labels = [label for label, (_, files) in enumerate(classes) for _ in files]
        return paths, labels, [name for name, _ in classes]
    if not loose:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise file_error(root, f"no images found (looked for {suffixes}, in it and in subfolders)")
    return loose, None, []


def _read_image(path: Path, mode: str, size: tuple[int, int] | None) -> tuple[np.ndarray, int]:
    """The pixels ``(H, W, C)`` of ``path`` as it is shown (turned upright by its EXIF orientation), and its frame count
    (an animated GIF's first frame is read)."""
    try:
        with Image.open(path) as image:
            _require_eight_bit(image, path)
            frames = getattr(image, "n_frames", 1)
            image = ImageOps.exif_transpose(image).convert("L" if mode == "grayscale" else "RGB")
            if size is not None:
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(image)
    except DatasetError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise file_error(path, f"is not a readable image ({error})") from None
    return (pixels[:, :, None] if pixels.ndim == 2 else pixels), frames


def _require_eight_bit(image: Image.Image, path: Path) -> None:
    """Refuse an image of more than 8 bits per channel, which Pillow's ``convert`` would clip or truncate."""
    values = ImageMode.getmode(image.mode).typestr  # "|u1" for 8-bit modes, "|b1" for bilevel
    if values[1:] not in ("u1", "b1"):
        raise file_error(path, f"has Pillow mode {image.mode!r} ({np.dtype(values)} values); {EIGHT_BITS}")
    bits = _stored_bits(image, path)
    if bits > 8:  # colour PNGs, PPMs and TIFFs of more bits open as 8-bit RGB(A), truncated
        raise file_error(path, f"is a {bits}-bit {image.mode} {image.format}, which Pillow reads as 8 bits per channel; {EIGHT_BITS}")


EIGHT_BITS = (
    "image_folder reads images of 8 bits per channel: convert it, or save the pixels as .npy and use type: npy with pixel_max"
)


def _stored_bits(image: Image.Image, path: Path) -> int:
    """Bits per sample as the file stores them (8 unless it says more), whatever mode Pillow opens it in."""
    if image.format == "PNG":
        return _png_bit_depth(path)
    if image.format == "TIFF":
        bits = image.tag_v2.get(258, 8)  # BitsPerSample: one number per channel, or one for all
        return max(bits) if isinstance(bits, tuple) else int(bits)
    for tile in image.tile:  # the raw decoder's mode says it: "RGB;16L"; a PPM decoder takes the maximum value
        args = tile[3] if isinstance(tile[3], tuple) else (tile[3],)
        if any(isinstance(arg, str) and ";16" in arg for arg in args):
            return 16
        if image.format == "PPM" and len(args) > 1 and isinstance(args[1], int):
            return max(8, args[1].bit_length())
    return 8


def _png_bit_depth(path: Path) -> int:
    """Bits per sample, from the PNG's IHDR chunk (signature, length, b"IHDR", width, height, then the depth)."""
    with open(path, "rb") as file:
        header = file.read(25)
    return header[24] if len(header) == 25 and header[12:16] == b"IHDR" else 8


def _caution_grey(x: Tensor, root: Path) -> None:
    """Warn when the default ``mode: rgb`` made every image 3 equal channels: D triples, and likelihoods and bits/dim
    count each grey pixel three times, so they compare with no model of the grey images."""
    if x.shape[1] == 3 and bool((x[:, 1:] == x[:, :1]).all()):
        warnings.warn(
            SpecWarning(
                f"{root}: every image is grey, and the default mode: rgb reads each as 3 equal channels, which triples "
                "the dimensions that likelihoods and bits/dim count; set mode: grayscale (C = 1), or mode: rgb to keep them"
            ),
            stacklevel=3,
        )


def build_image_folder(p: ImageFolderParams, ctx: BuildContext | None = None) -> Splits:
    """Images of a folder (classes = sorted subfolders, labels ``y``), read with Pillow; seeded split."""
    paths, labels, classes = _find_images(p.root)
    images, animated = [], []
    for path in paths:
        pixels, frames = _read_image(path, p.mode, p.size)
        if frames > 1:
            animated.append(f"{path.relative_to(p.root)} ({frames} frames)")
        if images and pixels.shape != images[0].shape:
            raise file_error(
                path, f"is {pixels.shape[1]}×{pixels.shape[0]} but {paths[0].relative_to(p.root)} is "
                f"{images[0].shape[1]}×{images[0].shape[0]} (width×height); set size: [H, W] to resize"
            )
        images.append(pixels)
    if animated:
        warnings.warn(SpecWarning(f"{p.root}: only the first frame is read of {listed(animated)}"), stacklevel=2)
    x = torch.as_tensor(np.stack(images), dtype=torch.float64).permute(0, 3, 1, 2)
    if "mode" not in p.model_fields_set:
        _caution_grey(x, p.root)
    fields = {"x": x} if labels is None else {"x": x, "y": torch.tensor(labels)}
    train, test = split_fields(fields, p)
    space = DataSpace(num_classes=len(classes) or None, meta={"classes": classes} if classes else {})
    return _image_splits(p, train, test, space)


# --- MNIST's IDX files

#: IDX type codes and their big-endian dtypes.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path, what: tuple[str, int] | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not): magic ``00 00 <type> <ndim>``, ``ndim`` big-endian
    uint32 sizes, then the values (LeCun et al., 1998, http://yann.lecun.com/exdb/mnist/).

    ``what``, e.g. ``("images (count, rows, columns)", 3)``, is the kind of file expected and its
    number of dimensions, which the magic number must declare.  A gzipped file is read as a
    stream: its header is checked before the values are decompressed, and no more than the
    header declares is ever read (a small file of the wrong kind could unpack to gigabytes).
    """
    require_file(path)
    with open(path, "rb") as file:
        gzipped = file.read(2) == b"\x1f\x8b"
    try:
        with gzip.open(path, "rb") if gzipped else open(path, "rb") as file:
            return _read_idx_stream(file, path, what)
    except (OSError, EOFError, zlib.error) as error:
        raise file_error(path, f"is corrupt gzip data ({error})" if gzipped else f"is unreadable ({error})") from None


def _read_at_most(file: BinaryIO, count: int, chunk: int = 1 << 24) -> bytearray:
    """Up to ``count`` bytes of ``file``, a chunk at a time: a header that declares terabytes costs the memory
    of what the file holds, not a ``MemoryError`` (or, where memory is overcommitted, a vast allocation)."""
    values = bytearray()
    while len(values) < count and (part := file.read(min(chunk, count - len(values)))):
        values += part
    return values


def _read_idx_stream(file: BinaryIO, path: Path, what: tuple[str, int] | None) -> np.ndarray:
    magic = file.read(4)
    if len(magic) < 4:
        raise file_error(path, f"is truncated: {len(magic)} bytes, shorter than the 4-byte IDX magic number")
    if magic[0] or magic[1] or magic[2] not in IDX_TYPES or magic[3] == 0:
        raise file_error(
            path, f"bad magic number 0x{magic.hex()}; an IDX file starts with 00 00, a type code "
            f"({', '.join(f'{code:02x}' for code in IDX_TYPES)}) and a nonzero number of dimensions"
        )
    ndim, dtype = magic[3], np.dtype(IDX_TYPES[magic[2]])
    if what is not None and ndim != what[1]:
        raise file_error(
            path, f"magic number 0x{magic.hex()} declares {ndim} dimension(s), but {what[0]} have {what[1]} "
            f"(MNIST's magic 0x0000080{what[1]}): is it the right file?"
        )
    sizes = file.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise file_error(
            path, f"is truncated: the header of {ndim} dimension sizes needs {4 + 4 * ndim} bytes, the file has {4 + len(sizes)}"
        )
    shape = struct.unpack(f">{ndim}I", sizes)
    expected = math.prod(shape) * dtype.itemsize
    values = _read_at_most(file, expected)
    if len(values) < expected:
        raise file_error(path, f"is truncated: shape {shape} of {dtype} needs {expected} data bytes, the file has {len(values)}")
    if file.read(1):
        raise file_error(path, f"has trailing bytes: shape {shape} of {dtype} needs {expected} data bytes, the file has more")
    return np.frombuffer(values, dtype=dtype).reshape(shape)


class MnistIdxParams(EightBitParams):
    images: Path = Field(..., description="IDX file of unsigned-byte images (count, rows, columns), gzipped or not")
    labels: Path | None = Field(None, description="IDX file of the images' labels (non-negative integers), if any")
    test_images: Path | None = Field(
        None, description="IDX test images (MNIST's t10k file); without it, test_fraction of images"
    )
    test_labels: Path | None = Field(None, description="IDX labels of test_images; given with labels, or neither")

    @model_validator(mode="after")
    def _paired_files(self) -> "MnistIdxParams":
        if self.test_images is not None and (self.labels is None) != (self.test_labels is None):
            raise ValueError("give labels and test_labels together, or neither")
        if self.test_images is None and self.test_labels is not None:
            raise ValueError("test_labels needs test_images")
        return self


def _idx_images(path: Path, split: str) -> Tensor:
    images = read_idx(path, ("images (count, rows, columns)", 3))
    if images.dtype != np.uint8 or images.ndim != 3:
        raise file_error(
            path, f"holds {images.dtype} of shape {images.shape}; expected unsigned bytes, shape (count, rows, columns)"
        )
    if 0 in images.shape:
        raise file_error(path, f"holds shape {images.shape}, no pixels: an empty {split} split")
    return torch.as_tensor(images.astype(np.float64))[:, None]


def _idx_half(images: Path, labels: Path | None, split: str) -> tuple[dict[str, Tensor], int | None]:
    x = _idx_images(images, split)
    if labels is None:
        return {"x": x}, None
    y, num_classes = as_labels(read_idx(labels, ("labels (count)", 1)), labels, len(x))
    return {"x": x, "y": y}, num_classes


def build_mnist_idx(p: MnistIdxParams, ctx: BuildContext | None = None) -> Splits:
    """MNIST-style IDX image and label files (gzipped or not), magic numbers and sizes checked (LeCun et al., 1998)."""
    if p.test_images is not None and Path(p.test_images).resolve() == Path(p.images).resolve():
        raise file_error(p.test_images, "is the train images' file too: the test split would be the train split, and every held-out metric a training one")
    train, num_classes = _idx_half(p.images, p.labels, "train")
    if p.test_images is None:
        train, test = split_fields(train, p)
    else:
        test, test_classes = _idx_half(p.test_images, p.test_labels, "test")
        if test["x"].shape[1:] != train["x"].shape[1:]:
            sizes = tuple(test["x"].shape[2:]), tuple(train["x"].shape[2:])
            raise file_error(p.test_images, f"has images of {sizes[0]}; {p.images} has {sizes[1]}")
        num_classes = None if num_classes is None else max(num_classes, test_classes or 0)
    return _image_splits(p, train, test, DataSpace(num_classes=num_classes))


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("image_folder", "dataset", ImageFolderParams, build_image_folder),
        ComponentType("mnist_idx", "dataset", MnistIdxParams, build_mnist_idx),
    ]
