"""Toy 2D datasets: shapes, seeded splits, labels and the geometry each one promises."""

from __future__ import annotations

import re

import pytest
import torch
from pydantic import ValidationError

from compose_gen_plugins.datasets import DatasetError
from compose_gen_plugins.datasets.toy import MAX_TOY_EXAMPLES

from .conftest import CATALOGUE

TOY = [
    "eight_gaussians", "gaussian_grid", "moons", "circles", "checkerboard",
    "pinwheel", "swiss_roll", "rings", "two_spirals",
]


@pytest.mark.parametrize("name", TOY)
def test_shapes_split_and_labels(build, name: str) -> None:
    splits = build(name, n=500, test_fraction=0.3)
    assert len(splits.train) == 350 and len(splits.test) == 150
    for half in (splits.train, splits.test):
        x = half.fields["x"]
        assert x.shape[1:] == (2,) and x.dtype == torch.float32 and torch.isfinite(x).all()
        assert half.ladj_to_model == 0.0 and half.image_shape is None
        if "y" in half.fields:
            y = half.fields["y"]
            assert y.dtype == torch.long and y.min() >= 0 and y.max() < half.num_classes
    if "y" in splits.train.fields:
        assert len(torch.cat([splits.train.fields["y"], splits.test.fields["y"]]).unique()) == splits.train.num_classes


@pytest.mark.parametrize("name", TOY)
def test_seed_fixes_data_and_split(build, name: str) -> None:
    first, again, other = build(name, n=200, seed=3), build(name, n=200, seed=3), build(name, n=200, seed=4)
    assert torch.equal(first.train.fields["x"], again.train.fields["x"])
    assert torch.equal(first.test.fields["x"], again.test.fields["x"])
    assert not torch.equal(first.train.fields["x"], other.train.fields["x"])


def test_eight_gaussians_modes_and_labels(build) -> None:
    splits = build("eight_gaussians", n=400, noise=0.0, radius=3.0)
    modes, x, y = splits.train.meta["modes"], splits.train.fields["x"], splits.train.fields["y"]
    assert modes.shape == (8, 2) and splits.train.meta["mode_std"] == 0.0
    torch.testing.assert_close(modes.norm(dim=1), torch.full((8,), 3.0))
    torch.testing.assert_close(x, modes[y])
    noisy = build("eight_gaussians", n=4000, noise=0.1)
    offsets = noisy.train.fields["x"] - noisy.train.meta["modes"][noisy.train.fields["y"]]
    assert offsets.std().item() == pytest.approx(0.1, rel=0.05)


def test_gaussian_grid_modes(build) -> None:
    splits = build("gaussian_grid", n=300, noise=0.0, size=3, spacing=1.5)
    modes = splits.train.meta["modes"]
    assert modes.shape == (9, 2) and set(modes.flatten().tolist()) == {-1.5, 0.0, 1.5}
    torch.testing.assert_close(splits.train.fields["x"], modes[splits.train.fields["y"]])


def test_noiseless_curves_lie_where_promised(build) -> None:
    moons = build("moons", n=200, noise=0.0).train
    x, y = moons.fields["x"], moons.fields["y"]
    torch.testing.assert_close(x[y == 0].norm(dim=1), torch.ones(int((y == 0).sum())))
    torch.testing.assert_close((x[y == 1] - torch.tensor([1.0, 0.5])).norm(dim=1), torch.ones(int((y == 1).sum())))
    assert (x[y == 0, 1] >= 0).all() and (x[y == 1, 1] <= 0.5).all()
    circles = build("circles", n=200, noise=0.0, factor=0.3).train
    radius = circles.fields["x"].norm(dim=1)
    torch.testing.assert_close(radius, torch.where(circles.fields["y"] == 0, 1.0, 0.3))
    rings = build("rings", n=200, noise=0.0, rings=3).train
    expected = torch.tensor(rings.meta["radii"], dtype=torch.float32)[rings.fields["y"]]
    torch.testing.assert_close(rings.fields["x"].norm(dim=1), expected)


def test_checkerboard_cells(build) -> None:
    board = build("checkerboard", n=1000).train
    cell = torch.floor(board.fields["x"] / 2).long() + 2  # 4×4 cells of side 2 over [-4, 4]²
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all(), "only one colour of the board is filled"
    torch.testing.assert_close(board.fields["y"], cell[:, 0] * 2 + cell[:, 1] // 2)


def test_two_spirals_are_point_symmetric(build) -> None:
    spirals = build("two_spirals", n=4000, noise=0.0).train
    x, y = spirals.fields["x"].double(), spirals.fields["y"]
    assert (x[y == 0].mean(0) + x[y == 1].mean(0)).abs().max() < 0.15


def test_transforms_apply_and_display_returns_data_space(build) -> None:
    plain = build("moons", n=100)
    scaled = build("moons", n=100, transforms=["standardise"])
    x = scaled.train.fields["x"].double()
    torch.testing.assert_close(x.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(scaled.test.to_display(scaled.test.fields["x"]), plain.test.fields["x"])
    std = plain.train.fields["x"].double().std(0)
    assert scaled.train.ladj_to_model == pytest.approx(-torch.log(std).sum().item(), rel=1e-5)


def test_split_that_leaves_a_half_empty_is_an_error(build) -> None:
    with pytest.raises(DatasetError, match="empty test split"):
        build("moons", n=2, test_fraction=0.1)
    assert len(build("moons", n=3, test_fraction=0.4).test) == 1


@pytest.mark.parametrize(("name", "params"), [("pinwheel", {"radial_std": 1000.0}), ("eight_gaussians", {"radius": 1e300})])
def test_parameters_that_make_points_beyond_float32_are_named(build, name: str, params: dict) -> None:
    """They made NaN or inf points, and the dataset contract then blamed the plugin for them."""
    key, value = next(iter(params.items()))
    with pytest.raises(DatasetError, match=rf"{name} with .*{key}: {re.escape(str(value))}.* makes points that are not finite or are beyond"):
        build(name, **params)


@pytest.mark.parametrize("name", TOY)
def test_a_size_beyond_the_bound_is_refused_at_validation(name: str) -> None:
    """``n: 1e12`` failed in torch's allocator while building, after validate had passed the spec."""
    params = CATALOGUE.get(name).params
    with pytest.raises(ValidationError, match=f"less than or equal to {MAX_TOY_EXAMPLES}"):
        params.model_validate({"n": 10**12})
    assert params.model_validate({"n": MAX_TOY_EXAMPLES}).n == MAX_TOY_EXAMPLES
