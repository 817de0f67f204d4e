"""Sample pictures: 2D scatter plots coloured by class."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import numpy as np
import torch
from PIL import Image

from compose_gen.core.images import save_grid, save_scatter

#: matplotlib's tab10 colours of classes 0, 1 and 2.
TAB10 = {0: (31, 119, 180), 1: (255, 127, 14), 2: (44, 160, 44)}


def _where(picture: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    """(row, column) of the pixels of about this colour."""
    return np.argwhere(np.abs(picture.astype(int) - rgb).sum(-1) < 30)


def test_points_drawn_by_class_are_coloured_by_their_class(tmp_path) -> None:
    """Point i is of class i mod 3: class 0 sits at the origin, class 1 to its right, class 2 above it."""
    centres = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    points = torch.randn(300, 2, generator=torch.Generator().manual_seed(0)) * 0.2 + centres.repeat(100, 1)
    for classes in (None, 3):
        labels = None if classes is None else torch.arange(300) % classes
        path = save_scatter(points, tmp_path / f"{classes}.png", reference=points, labels=labels)
        picture = np.asarray(Image.open(path).convert("RGB"))
        left = picture[:, : picture.shape[1] // 2]  # the scatter panel
        found = {k: _where(left, rgb) for k, rgb in TAB10.items()}
        if classes is None:
            assert len(found[0]) > 200 and len(found[1]) == len(found[2]) == 0  # one colour for all samples
            continue
        assert all(len(pixels) > 100 for pixels in found.values())
        (row0, col0), (row1, col1), (row2, col2) = (np.median(found[k], 0) for k in range(3))
        assert col1 > col0 + 50 and abs(row1 - row0) < 40  # class 1 to the right
        assert row2 < row0 - 50 and abs(col2 - col0) < 40  # class 2 above


@pytest.mark.parametrize("n, classes, columns", [(64, 2, 8), (64, 3, 9), (64, 10, 10), (16, 10, 10), (64, None, None)])
def test_a_grid_of_samples_by_class_is_roughly_square_with_one_class_per_column(n, classes, columns) -> None:
    """2 classes, 64 samples: 8 columns (classes 0, 1, 0, 1, ...), not a 2x32 strip; sample i is of class i mod classes."""
    from compose_gen.core.images import class_columns

    assert class_columns(n, classes) == columns
    if classes:
        assert all(i % columns % classes == i % classes for i in range(n))  # column i mod columns holds class i mod classes


def test_the_legend_calls_classes_by_their_names_where_the_data_name_them() -> None:
    """Labels 0 and 2 of three named classes read as those names; a label without a name stays ``class k``."""
    import matplotlib

    from compose_gen.core.images import _class_handles

    palette = matplotlib.colormaps["tab10"]
    assert _class_handles(palette, [0, 2], ["setosa", "versicolor", "virginica"])[1] == ["setosa", "virginica"]
    assert _class_handles(palette, [0, 3], ["setosa", "versicolor", "virginica"])[1] == ["setosa", "class 3"]
    assert _class_handles(palette, [1])[1] == ["class 1"]


def test_point_sets_are_drawn_in_a_colour_each_where_they_lie(tmp_path) -> None:
    """The first set sits at the origin, the second to its right, the third above it: tab10's first three colours."""
    from compose_gen.core.images import save_point_sets

    noise = torch.randn(200, 2, generator=torch.Generator().manual_seed(0)) * 0.2
    sets = {"a": noise, "ab": noise + torch.tensor([3.0, 0.0]), "b": noise + torch.tensor([0.0, 3.0])}
    picture = np.asarray(Image.open(save_point_sets(sets, tmp_path / "sets.png")).convert("RGB"))
    found = {k: _where(picture, rgb) for k, rgb in TAB10.items()}
    assert all(len(pixels) > 100 for pixels in found.values())
    (row0, col0), (row1, col1), (row2, col2) = (np.median(found[k], 0) for k in range(3))
    assert col1 > col0 + 50 and abs(row1 - row0) < 40
    assert row2 < row0 - 50 and abs(col2 - col0) < 40


def _grid(tiles: list[list[np.ndarray | None]], pad: int = 1) -> np.ndarray:
    """The uint8 grid of these rows of (H, W) or (H, W, 3) tiles on white, ``pad`` pixels apart; None leaves a cell white."""
    h, w, *colour = next(t for row in tiles for t in row if t is not None).shape
    grid = np.full((len(tiles) * (h + pad) + pad, len(tiles[0]) * (w + pad) + pad, *colour), 255, dtype=np.uint8)
    for r, row in enumerate(tiles):
        for col, tile in enumerate(row):
            if tile is not None:
                grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = tile
    return grid


def _uint8(images: torch.Tensor) -> np.ndarray:
    return (images * 255).round().to(torch.uint8).numpy()


@pytest.mark.parametrize("c", [2, 4, 5])
def test_images_of_other_than_1_or_3_channels_are_drawn_as_a_grey_tile_per_channel(tmp_path, c) -> None:
    """3 images of C channels, 2 to a row: 2 rows of 2C grey tiles, image i's channels side by side, the 4th cell white."""
    from compose_gen.core.images import save_grid

    n, h, w, scale = 3, 3, 4, 2
    images = torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(c)) / 255
    path = save_grid(images, tmp_path / f"{c}.png", nrow=2, scale=scale)
    with Image.open(path) as picture:
        assert (picture.mode, picture.size) == ("L", (scale * (2 * c * (w + 1) + 1), scale * (2 * (h + 1) + 1)))
        pixels = np.asarray(picture)
    channels = [list(_uint8(images[i])) for i in range(n)] + [[None] * c]  # channel k of image i: (H, W)
    expected = _grid([channels[0] + channels[1], channels[2] + channels[3]])
    assert np.array_equal(pixels, expected.repeat(scale, 0).repeat(scale, 1))


@pytest.mark.parametrize("c, mode", [(1, "L"), (3, "RGB")])
def test_grey_and_colour_images_are_drawn_a_tile_per_image(tmp_path, c, mode) -> None:
    """1 channel is a grey tile, 3 an RGB one: 3 images, 2 to a row, enlarged 2x."""
    from compose_gen.core.images import save_grid

    images = torch.randint(0, 256, (3, c, 3, 4), generator=torch.Generator().manual_seed(c)) / 255
    with Image.open(save_grid(images, tmp_path / f"{c}.png", nrow=2, scale=2)) as picture:
        assert picture.mode == mode
        pixels = np.asarray(picture)
    tiles = [t[..., 0] if c == 1 else t for t in _uint8(images.permute(0, 2, 3, 1))]
    expected = _grid([tiles[:2], [tiles[2], None]])
    assert np.array_equal(pixels, expected.repeat(2, 0).repeat(2, 1))


def test_a_picture_that_cannot_be_written_leaves_none_in_its_place(tmp_path: Path, monkeypatch) -> None:
    def fail(self, fp, format=None, **params):  # noqa: A002 (PIL's own name)
        Path(fp).write_bytes(b"\x89PNG\r\n")  # the first bytes, then the disk is full
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(Image.Image, "save", fail)
    with pytest.raises(OSError, match=r"not written .*: '.*step-00000200.png'"):
        save_grid(torch.rand(4, 1, 8, 8), tmp_path / "step-00000200.png")
    assert list(tmp_path.iterdir()) == []
