"""Image folders (PNG via Pillow) and MNIST IDX files written into tmp_path, and their malformed forms."""

from __future__ import annotations

import gzip
import math
import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compose_gen import SpecWarning
from compose_gen_plugins.datasets import DatasetError
from compose_gen_plugins.datasets.images import read_idx


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def folder(root: Path) -> dict[str, np.ndarray]:
    """Two classes of 4×6 RGB images whose red channel encodes their index."""
    images = {}
    for i in range(6):
        pixels = np.zeros((4, 6, 3), np.uint8)
        pixels[..., 0], pixels[..., 1] = 40 * i, 255
        name = f"{'cats' if i < 3 else 'dogs'}/img{i}.png"
        write_png(root / name, pixels)
        images[name] = pixels
    return images


def test_image_folder_rgb_classes_and_display(build, tmp_path: Path) -> None:
    folder(tmp_path)
    splits = build("image_folder", root=str(tmp_path), test_fraction=0.5)
    x, y = splits.train.fields["x"], splits.train.fields["y"]
    assert x.shape == (3, 3, 4, 6) and splits.train.image_shape == (3, 4, 6)
    assert splits.train.meta["classes"] == ["cats", "dogs"] and splits.train.num_classes == 2
    index = (x[:, 0, 0, 0] * 255 / 40).round().long()
    torch.testing.assert_close(y, (index >= 3).long())
    torch.testing.assert_close(x[:, 1], torch.ones(3, 4, 6))
    assert splits.train.ladj_to_model == pytest.approx(-3 * 4 * 6 * math.log(255))
    torch.testing.assert_close(splits.test.to_display(splits.test.fields["x"]), splits.test.fields["x"])


def test_an_empty_class_folder_is_warned_about_since_it_moves_the_labels_after_it(build, tmp_path: Path) -> None:
    folder(tmp_path)
    (tmp_path / "birds").mkdir()  # sorts first: without a word, cats would not be label 1 as the folders suggest
    with pytest.warns(SpecWarning, match=rf"class folder\(s\) birds of {tmp_path} hold no images and are left out, so the classes are cats, dogs, labelled 0\.\.1"):
        splits = build("image_folder", root=str(tmp_path), test_fraction=0.5)
    assert splits.train.meta["classes"] == ["cats", "dogs"]


def test_image_folder_grayscale_resize_flat_unscaled(build, tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", np.full((8, 8), 200))
    write_png(tmp_path / "b.png", np.full((4, 6), 100))
    splits = build(
        "image_folder", root=str(tmp_path), mode="grayscale", size=[2, 3], shape="flat", scale=False, test_fraction=0.5
    )
    assert splits.train.fields["x"].shape == (1, 6) and "y" not in splits.train.fields
    assert splits.train.image_shape == (1, 2, 3) and splits.train.ladj_to_model == 0.0
    values = {splits.train.fields["x"][0, 0].item(), splits.test.fields["x"][0, 0].item()}
    assert values == {200.0, 100.0}
    shown = splits.test.to_display(splits.test.fields["x"])
    assert shown.shape == (1, 1, 2, 3) and shown.max() <= 1


def test_image_folder_order_is_deterministic(build, tmp_path: Path) -> None:
    folder(tmp_path)
    first, again = build("image_folder", root=str(tmp_path)), build("image_folder", root=str(tmp_path))
    assert torch.equal(first.train.fields["x"], again.train.fields["x"])


def test_image_folder_errors_name_the_file(build, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=f"{tmp_path}: no images found"):
        build("image_folder", root=str(tmp_path))
    with pytest.raises(DatasetError, match="no such folder"):
        build("image_folder", root=str(tmp_path / "missing"))
    folder(tmp_path)
    (tmp_path / "dogs" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=f"{tmp_path / 'dogs' / 'broken.png'}: is not a readable image"):
        build("image_folder", root=str(tmp_path))
    (tmp_path / "dogs" / "broken.png").unlink()
    write_png(tmp_path / "dogs" / "wide.png", np.zeros((4, 7, 3)))
    with pytest.raises(DatasetError, match=r"wide.png: is 7×4 but cats/img0.png is 6×4.*size"):
        build("image_folder", root=str(tmp_path))
    assert len(build("image_folder", root=str(tmp_path), size=[4, 6]).train) == 6
    write_png(tmp_path / "loose.png", np.zeros((4, 6, 3)))
    with pytest.raises(DatasetError, match="both in class folders and directly inside"):
        build("image_folder", root=str(tmp_path), size=[4, 6])


def test_a_grey_folder_read_by_the_default_mode_rgb_is_warned_of(build, tmp_path: Path) -> None:
    """Three equal channels triple D, and with it what likelihoods and bits/dim count; saying mode: rgb keeps them."""
    write_png(tmp_path / "a.png", np.full((4, 6), 200))
    Image.fromarray(np.full((4, 6), 90, np.uint8)).convert("P").save(tmp_path / "b.png")
    with pytest.warns(SpecWarning, match=rf"^{tmp_path}: every image is grey, and the default mode: rgb .* set mode: grayscale"):
        assert build("image_folder", root=str(tmp_path), test_fraction=0.5).train.image_shape == (3, 4, 6)
    for mode in ("grayscale", "rgb"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", SpecWarning)
            build("image_folder", root=str(tmp_path), mode=mode, test_fraction=0.5)
    write_png(tmp_path / "c.png", np.dstack([np.full((4, 6), 200), np.zeros((4, 6)), np.zeros((4, 6))]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecWarning)
        build("image_folder", root=str(tmp_path), test_fraction=0.5)


def test_image_folder_of_one_pixel_colour_images(build, tmp_path: Path) -> None:
    """1x1 RGB images are (N, 3, 1, 1), whose last stride contiguous() leaves at 3: the fingerprint must still hash them."""
    for i in range(4):
        write_png(tmp_path / f"{i}.png", np.array([[[60 * i, 10, 250]]]))
    splits = build("image_folder", root=str(tmp_path), test_fraction=0.5)
    assert splits.train.fields["x"].shape == (2, 3, 1, 1) and len(splits.train.source) == 64


def test_image_folder_turns_images_upright_by_their_exif_orientation(build, tmp_path: Path) -> None:
    """A camera stores a portrait photo as landscape pixels and an EXIF orientation; viewers (and so the dataset) turn it."""
    pixels = np.arange(4 * 6, dtype=np.uint8).reshape(4, 6) * 10
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    for name in ("a.png", "b.png"):
        Image.fromarray(pixels).save(tmp_path / name, exif=exif)
    splits = build("image_folder", root=str(tmp_path), mode="grayscale", scale=False, test_fraction=0.5)
    upright = torch.as_tensor(np.rot90(pixels, -1).copy(), dtype=torch.float32)
    for half in (splits.train, splits.test):
        torch.testing.assert_close(half.fields["x"][0, 0], upright)


def test_image_folder_reads_an_animation_s_first_frame_and_says_so(build, tmp_path: Path) -> None:
    first, second = (Image.fromarray(np.full((4, 6), value, np.uint8)) for value in (30, 200))
    first.save(tmp_path / "a.gif", save_all=True, append_images=[second])
    write_png(tmp_path / "b.png", np.full((4, 6), 90))
    with pytest.warns(SpecWarning, match=rf"^{tmp_path}: only the first frame is read of a.gif \(2 frames\)$"):
        splits = build("image_folder", root=str(tmp_path), mode="grayscale", scale=False, test_fraction=0.5)
    assert sorted(half.fields["x"][0, 0, 0, 0].item() for half in (splits.train, splits.test)) == [30.0, 90.0]


def test_image_folder_refuses_a_link_to_an_image_that_is_gone(build, tmp_path: Path) -> None:
    """Leaving it out would change the data (and the labels' counts) without a word."""
    folder(tmp_path)
    (tmp_path / "cats" / "gone.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(DatasetError, match=f"^{tmp_path / 'cats' / 'gone.png'}: is a symbolic link to {tmp_path / 'elsewhere.png'}, which does not exist$"):
        build("image_folder", root=str(tmp_path))
    (tmp_path / "cats" / "notes.txt").symlink_to(tmp_path / "gone.txt")  # not an image: not read, so not an error
    (tmp_path / "cats" / "gone.png").unlink()
    (tmp_path / "birds").symlink_to(tmp_path / "moved" / "birds")  # a class folder that is gone: its class would vanish
    with pytest.raises(DatasetError, match=f"^{tmp_path / 'birds'}: is a symbolic link to {tmp_path / 'moved' / 'birds'}, which does not exist$"):
        build("image_folder", root=str(tmp_path))
    (tmp_path / "birds").unlink()
    (tmp_path / "cats" / "kittens").symlink_to(tmp_path / "moved" / "kittens")  # and a folder of images inside a class
    with pytest.raises(DatasetError, match="kittens: is a symbolic link"):
        build("image_folder", root=str(tmp_path))
    (tmp_path / "cats" / "kittens").unlink()
    splits = build("image_folder", root=str(tmp_path))
    assert len(splits.train) + len(splits.test) == 6


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


IMAGES = np.arange(5 * 3 * 4, dtype=np.uint8).reshape(5, 3, 4) * 4
LABELS = np.array([3, 1, 4, 1, 5], np.uint8)


@pytest.mark.parametrize("gzipped", [False, True])
def test_mnist_idx_with_and_without_gzip(build, tmp_path: Path, gzipped: bool) -> None:
    pack = gzip.compress if gzipped else bytes
    (tmp_path / "img").write_bytes(pack(idx_bytes(IMAGES)))
    (tmp_path / "lab").write_bytes(pack(idx_bytes(LABELS)))
    splits = build("mnist_idx", images=str(tmp_path / "img"), labels=str(tmp_path / "lab"), test_fraction=0.4)
    assert splits.train.fields["x"].shape == (3, 1, 3, 4) and splits.train.image_shape == (1, 3, 4)
    assert splits.train.num_classes == 6
    x = torch.cat([splits.train.fields["x"], splits.test.fields["x"]])
    y = torch.cat([splits.train.fields["y"], splits.test.fields["y"]])
    order = x[:, 0, 0, 0].argsort()
    torch.testing.assert_close(x[order] * 255, torch.as_tensor(IMAGES, dtype=torch.float32)[:, None])
    torch.testing.assert_close(y[order], torch.as_tensor(LABELS, dtype=torch.long))


def test_mnist_idx_test_files_define_the_test_split(build, tmp_path: Path) -> None:
    for name, array in {"tr": IMAGES, "trl": LABELS, "te": IMAGES[:2], "tel": LABELS[:2]}.items():
        (tmp_path / name).write_bytes(idx_bytes(array))
    files = {"images": "tr", "labels": "trl", "test_images": "te", "test_labels": "tel"}
    paths = {param: str(tmp_path / name) for param, name in files.items()}
    splits = build("mnist_idx", **paths, shape="flat", scale=False)
    assert len(splits.train) == 5 and len(splits.test) == 2 and splits.test.fields["x"].shape == (2, 12)
    torch.testing.assert_close(splits.test.fields["x"], torch.as_tensor(IMAGES[:2], dtype=torch.float32).reshape(2, 12))
    with pytest.raises(DatasetError, match="is the train images' file too: the test split would be the train split"):
        build("mnist_idx", **{**paths, "test_images": paths["images"], "test_labels": paths["labels"]})


@pytest.mark.parametrize(
    ("head", "message"),
    [(b"PK\x03\x04", "bad magic number 0x504b0304"), (idx_bytes(LABELS), "has trailing bytes")],
    ids=["wrong-kind", "trailing"],
)
def test_a_gzipped_idx_is_not_unpacked_past_what_its_header_declares(build, tmp_path: Path, head: bytes, message: str) -> None:
    """100 MB of zeros gzip to 100 kB: a file of the wrong kind was unpacked whole (GBs) before its magic was read."""
    path = tmp_path / "labels.idx.gz"
    path.write_bytes(gzip.compress(head + bytes(100_000_000), compresslevel=1, mtime=0))
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match=message):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x00", "is truncated: 2 bytes"),
        (b"\x08\x03\x00\x00" + bytes(100), r"bad magic number 0x08030000"),
        (bytes([0, 0, 0x07, 3]) + bytes(100), r"bad magic number 0x00000703"),
        (idx_bytes(IMAGES)[:10], r"header of 3 dimension sizes needs 16 bytes"),
        (idx_bytes(IMAGES)[:-1], r"is truncated: shape \(5, 3, 4\) of uint8 needs 60 data bytes, the file has 59"),
        (idx_bytes(IMAGES) + b"\x00", "has trailing bytes"),
        (bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 60_000, 100_000, 100_000) + bytes(10),
         r"is truncated: shape \(60000, 100000, 100000\) of uint8 needs 600000000000000 data bytes, the file has 10"),
        (bytes([0, 0, 0x08, 3]) + struct.pack(">3I", *[2**32 - 1] * 3) + bytes(10), r"needs 79228162458924105385300197375 data bytes"),
        (gzip.compress(idx_bytes(IMAGES), mtime=0)[:-6], "is corrupt gzip data"),
        (idx_bytes(IMAGES.astype(np.int32), code=0x0C), r"holds >i4 of shape \(5, 3, 4\); expected unsigned bytes"),
        (idx_bytes(LABELS), r"magic number 0x00000801 declares 1 dimension\(s\), but images \(count, rows, columns\) have 3 \(MNIST's magic 0x00000803\)"),
        (bytes([0, 0, 0x08, 4, 0, 0, 0, 50]) + bytes(3192), r"magic number 0x00000804 declares 4 dimension\(s\)"),  # not 'truncated, needs 10 TB'
    ],
    ids=["short", "magic", "magic-type", "header", "truncated", "trailing", "declares-600-TB", "declares-2**96", "gzip", "dtype", "rank", "rank-4"],
)
def test_malformed_idx_images_name_the_file(build, tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "images.idx"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message) as error:
        build("mnist_idx", images=str(path))
    assert str(error.value).startswith(str(path))


def test_idx_label_count_must_match(build, tmp_path: Path) -> None:
    (tmp_path / "img").write_bytes(idx_bytes(IMAGES))
    (tmp_path / "lab").write_bytes(idx_bytes(LABELS[:4]))
    with pytest.raises(DatasetError, match=rf"{tmp_path / 'lab'}: the labels array has shape \(4,\); expected \(5,\)"):
        build("mnist_idx", images=str(tmp_path / "img"), labels=str(tmp_path / "lab"))


@pytest.mark.parametrize(
    ("pixels", "suffix", "mode", "values"),
    [
        (np.full((4, 4), 30_000, np.uint16), ".png", "I;16", "uint16"),
        (np.full((4, 4), 0.5, np.float32), ".tif", "F", "float32"),
    ],
    ids=["16-bit-png", "float-tiff"],
)
def test_image_folder_refuses_more_than_8_bits(build, tmp_path: Path, pixels, suffix: str, mode: str, values: str) -> None:
    write_png(tmp_path / "a.png", np.full((4, 4), 7))
    Image.fromarray(pixels).save(tmp_path / f"b{suffix}")
    path = tmp_path / f"b{suffix}"
    expected = rf"^{path}: has Pillow mode '{mode}' \({values} values\); image_folder reads images of 8 bits per channel"
    for mode_read in ("grayscale", "rgb"):
        with pytest.raises(DatasetError, match=expected):
            build("image_folder", root=str(tmp_path), mode=mode_read)


def write_png16_rgb(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit RGB PNG, by hand: Pillow cannot write one (and reads one as 8-bit RGB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[r].astype(">u2").tobytes() for r in range(height))  # filter type 0 per row
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # depth 16, colour type 2 (RGB)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def write_ppm_rgb(path: Path, pixels: np.ndarray, maximum: int) -> None:
    """A binary PPM (P6) whose maximum value takes two bytes per sample."""
    height, width, _ = pixels.shape
    path.write_bytes(f"P6\n{width} {height}\n{maximum}\n".encode() + pixels.astype(">u2").tobytes())


@pytest.mark.parametrize(
    ("name", "write", "bits", "kind"),
    [
        ("b.png", lambda path: write_png16_rgb(path, np.full((4, 4, 3), 30_000, np.uint16)), 16, "PNG"),
        ("b.ppm", lambda path: write_ppm_rgb(path, np.full((4, 4, 3), 30_000), 65535), 16, "PPM"),
        ("b.ppm", lambda path: write_ppm_rgb(path, np.full((4, 4, 3), 1000), 1023), 10, "PPM"),
    ],
    ids=["16-bit-png", "16-bit-ppm", "10-bit-ppm"],
)
def test_image_folder_refuses_a_colour_image_that_pillow_would_truncate_to_8_bits(build, tmp_path: Path, name, write, bits, kind) -> None:
    write_png(tmp_path / "a.png", np.full((4, 4), 7))
    write(tmp_path / name)
    with Image.open(tmp_path / name) as image:
        assert image.mode == "RGB"  # what Pillow makes of it: nothing in the mode says more than 8 bits
    message = rf"^{tmp_path / name}: is a {bits}-bit RGB {kind}, which Pillow reads as 8 bits per channel"
    with pytest.raises(DatasetError, match=message):
        build("image_folder", root=str(tmp_path))


def test_image_folder_keeps_palette_and_bilevel_images(build, tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 4), 200, np.uint8)).convert("P").save(tmp_path / "a.png")
    Image.fromarray(np.full((4, 4), 255, np.uint8)).convert("1").save(tmp_path / "b.png")
    splits = build("image_folder", root=str(tmp_path), mode="grayscale", scale=False, test_fraction=0.5)
    values = {splits.train.fields["x"].max().item(), splits.test.fields["x"].max().item()}
    assert values == {200.0, 255.0}


@pytest.mark.parametrize(
    ("empty", "split"),
    [("images", "train"), ("test_images", "test")],
)
def test_idx_file_without_images_is_an_empty_split(build, tmp_path: Path, empty: str, split: str) -> None:
    (tmp_path / "none").write_bytes(idx_bytes(IMAGES[:0]))
    (tmp_path / "no_labels").write_bytes(idx_bytes(LABELS[:0]))
    (tmp_path / "img").write_bytes(idx_bytes(IMAGES))
    (tmp_path / "lab").write_bytes(idx_bytes(LABELS))
    files = {"images": "img", "labels": "lab", "test_images": "img", "test_labels": "lab", empty: "none"}
    files[empty.replace("images", "labels")] = "no_labels"
    with pytest.raises(DatasetError, match=rf"^{tmp_path / 'none'}: holds shape \(0, 3, 4\), no pixels: an empty {split} split"):
        build("mnist_idx", **{param: str(tmp_path / name) for param, name in files.items()})


def test_idx_float_labels_must_be_finite(build, tmp_path: Path) -> None:
    (tmp_path / "img").write_bytes(idx_bytes(IMAGES))
    (tmp_path / "lab").write_bytes(idx_bytes(np.array([3, 1, np.inf, 1, 5], np.float32), code=0x0D))
    with pytest.raises(DatasetError, match=rf"^{tmp_path / 'lab'}: labels\[2\] = inf: labels must be non-negative integers"):
        build("mnist_idx", images=str(tmp_path / "img"), labels=str(tmp_path / "lab"))
