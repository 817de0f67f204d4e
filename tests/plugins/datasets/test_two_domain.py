"""Paired and unpaired two-domain datasets built from an inline source."""

from __future__ import annotations

import math

import numpy
import pytest
import torch
from pydantic import ValidationError

from compose_gen_plugins.datasets import DatasetError


def test_paired_invert_keeps_pairs_and_source_split(build) -> None:
    source = build("digits", shape="flat", seed=1)
    splits = build("paired", source={"type": "digits", "shape": "flat", "seed": 1}, mapping="invert")
    for half, original in ((splits.train, source.train), (splits.test, source.test)):
        assert torch.equal(half.fields["a"], original.fields["x"])
        torch.testing.assert_close(half.fields["b"], 1 - original.fields["x"])
        assert torch.equal(half.fields["y"], original.fields["y"])
        assert half.ladj_to_model == original.ladj_to_model and half.image_shape == (1, 8, 8)


@pytest.mark.parametrize("mapping", ["rotate90", "transpose"])
def test_paired_image_mappings(build, mapping: str) -> None:
    splits = build("paired", source={"type": "digits"}, mapping=mapping)
    a, b = splits.train.fields["a"], splits.train.fields["b"]
    expected = torch.rot90(a, 1, dims=(-2, -1)) if mapping == "rotate90" else a.transpose(-2, -1)
    assert torch.equal(b, expected) and not torch.equal(a, b)


@pytest.mark.parametrize("mapping", ["rotate90", "transpose"])
def test_point_mappings_turn_or_mirror_the_plane(build, mapping: str) -> None:
    """On 2-D points rotate90 is the quarter turn (u, v) -> (-v, u) and transpose the swap (u, v) -> (v, u)."""
    splits = build("paired", source={"type": "moons", "n": 40}, mapping=mapping)
    a, b = splits.train.fields["a"], splits.train.fields["b"]
    turn = torch.tensor([[0.0, 1.0], [-1.0, 0.0]]) if mapping == "rotate90" else torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    torch.testing.assert_close(b, a @ turn.to(a.dtype))
    torch.testing.assert_close(b.norm(dim=1), a.norm(dim=1))


def test_unpaired_shuffles_b_within_each_split(build) -> None:
    splits = build("unpaired", source={"type": "digits", "shape": "flat"}, seed=3)
    paired = build("paired", source={"type": "digits", "shape": "flat"})
    for half, aligned in ((splits.train, paired.train), (splits.test, paired.test)):
        a, b = half.fields["a"], half.fields["b"]
        assert torch.equal(a, aligned.fields["a"])
        assert torch.equal(torch.sort(b.sum(1)).values, torch.sort(aligned.fields["b"].sum(1)).values)
        assert (b != aligned.fields["b"]).any(1).float().mean() > 0.9
        order = [int(torch.nonzero((aligned.fields["b"] == row).all(1))[0]) for row in b[:20]]
        assert torch.equal(half.fields["y_b"][:20], aligned.fields["y"][order])
    again = build("unpaired", source={"type": "digits", "shape": "flat"}, seed=3)
    assert torch.equal(again.train.fields["b"], splits.train.fields["b"])


def test_shared_pipeline_and_display_for_both_domains(build) -> None:
    transforms = [{"type": "scale", "a": 2.0, "b": -1.0}, "flatten"]
    splits = build("paired", source={"type": "digits", "scale": True}, transforms=transforms)
    a, b = splits.test.fields["a"], splits.test.fields["b"]
    assert a.shape[1:] == (64,) and a.min() >= -1 and a.max() <= 1
    assert splits.test.ladj_to_model == pytest.approx(build("digits").test.ladj_to_model + 64 * math.log(2.0))
    shown_a, shown_b = splits.test.to_display(a), splits.test.to_display(b)
    assert shown_a.shape == (len(a), 1, 8, 8)
    torch.testing.assert_close(shown_a + shown_b, torch.ones_like(shown_a))


def test_two_domain_errors(build) -> None:
    with pytest.raises(DatasetError, match=r"invert needs a source with values in \[0, 1\]"):
        build("paired", source={"type": "digits", "scale": False})
    with pytest.raises(DatasetError, match="rotate90 needs a source of square images or of 2-D points"):
        build("paired", source={"type": "wine"}, mapping="rotate90")
    with pytest.raises(DatasetError, match="must not use logit"):
        build("paired", source={"type": "digits", "transforms": ["logit"]})
    with pytest.raises(ValidationError, match="digit"):
        build("paired", source={"type": "digit"})
    with pytest.raises(ValidationError, match="scaled"):
        build("paired", source={"type": "digits", "scaled": True})
    with pytest.raises(ValidationError):
        build("paired", source={"type": "paired", "source": {"type": "digits"}})


def test_two_sources_keep_their_splits_and_repeat_the_smaller_domain_evenly(build, tmp_path) -> None:
    noise = torch.rand(50, 1, 8, 8, generator=torch.Generator().manual_seed(0)).numpy()
    numpy.savez(tmp_path / "noise.npz", x=16 * noise)  # grey levels as the digits' own, 0..16
    a_source, b_source = {"type": "digits", "shape": "image", "scale": False}, {"type": "npz", "path": str(tmp_path / "noise.npz"), "test_fraction": 0.2}
    splits = build("two_sources", a=a_source, b=b_source, transforms=[{"type": "scale", "a": 1 / 8, "b": -1.0}])
    digits, own = build("digits", shape="image", scale=False), build("npz", path=str(tmp_path / "noise.npz"), test_fraction=0.2)
    for half, a, b in ((splits.train, digits.train, own.train), (splits.test, digits.test, own.test)):
        assert set(half.fields) == {"a", "b", "y_a"} and len(half) == len(a)
        assert torch.equal(half.fields["a"], a.fields["x"] / 8 - 1) and torch.equal(half.fields["y_a"], a.fields["y"])
        kept = (b.fields["x"] / 8 - 1).flatten(1)
        index = [int(torch.nonzero((kept == row).all(1))[0]) for row in half.fields["b"].flatten(1)]  # every b is one of b's split
        counts = torch.bincount(torch.tensor(index), minlength=len(b))
        assert counts.min() == len(a) // len(b) and counts.max() <= -(-len(a) // len(b)), "each example in turn"
        assert index[: len(b)] != sorted(index[: len(b)]), "shuffled"
        torch.testing.assert_close(half.to_display(half.fields["b"]), b.fields["x"][index] / 16)  # a's display serves both
    assert splits.train.ladj_to_model == pytest.approx(64 * math.log(1 / 8))


def test_two_sources_of_one_size_pair_nothing(build) -> None:
    """Moons and circles of one seed list their parts in one order (cyclegan_2d's sources): unshuffled, every moon of
    part k met a circle of part k, and two files made from one another met example for example."""
    splits = build("two_sources", a={"type": "moons", "n": 400}, b={"type": "circles", "n": 400})
    moons, circles = build("moons", n=400), build("circles", n=400)
    for half, a, b in ((splits.train, moons.train, circles.train), (splits.test, moons.test, circles.test)):
        assert torch.equal(half.fields["a"], a.fields["x"]) and torch.equal(a.fields["y"], b.fields["y"])
        same_part = (half.fields["y_a"] == half.fields["y_b"]).float().mean()
        assert 0.35 < same_part < 0.65, f"y_a == y_b for {same_part:.0%} of the pairs"
        assert torch.equal(torch.sort(half.fields["b"][:, 0]).values, torch.sort(b.fields["x"][:, 0]).values)  # b's own split
        assert (half.fields["b"] == b.fields["x"]).all(1).float().mean() < 0.1


def test_two_sources_must_agree_on_shape_and_scaling(build) -> None:
    with pytest.raises(DatasetError, match=r"the domains' examples must have one shape: a's are \(1, 8, 8\), b's \(64,\)"):
        build("two_sources", a={"type": "digits", "shape": "image"}, b={"type": "digits", "shape": "flat"})
    with pytest.raises(DatasetError, match="the sources map their values to model space differently"):
        build("two_sources", a={"type": "digits", "scale": False}, b={"type": "digits"})


def test_two_image_sources_must_show_a_value_alike(build, tmp_path) -> None:
    """Raw digits (white is 16) beside the same digits in [0, 1] (white is 1) both have log-determinant 0, yet b's
    pictures, drawn with a's display, came out at 1/16 of their brightness."""
    from sklearn.datasets import load_digits

    numpy.save(tmp_path / "b.npy", (load_digits().data.reshape(-1, 1, 8, 8) / 16).astype("float32"))
    b = {"type": "npy", "path": str(tmp_path / "b.npy"), "image_shape": [1, 8, 8]}
    with pytest.raises(DatasetError, match=r"the value 1 shows at brightness 0.0625 in a's pictures, 1 in b's"):
        build("two_sources", a={"type": "digits", "scale": False, "shape": "image"}, b=b)
    numpy.save(tmp_path / "b.npy", load_digits().data.reshape(-1, 1, 8, 8).astype("float32"))
    splits = build("two_sources", a={"type": "digits", "scale": False, "shape": "image"}, b={**b, "pixel_max": 16})  # alike
    assert splits.train.fields["a"].shape[1:] == splits.train.fields["b"].shape[1:] == (1, 8, 8)
