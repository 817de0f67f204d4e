"""The parameter-model base: file paths resolved once, at load time; floats finite unless a plugin opts in."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import ConfigDict, Field, ValidationError

from compose_gen import Params
from compose_gen.registry import StrictModel


class Files(Params):
    data: Path
    labels: Path | None = None


def test_relative_paths_become_absolute_against_the_working_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    params = Files(data="a/b.npz", labels=None)
    assert params.data == tmp_path / "a" / "b.npz" and params.labels is None
    assert Files.model_validate(params.model_dump(mode="json")) == params  # a dumped spec reads back the same


def test_home_is_expanded_and_absolute_paths_are_kept(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    params = Files(data="~/x.csv", labels="/srv/y.csv")
    assert params.data == tmp_path / "home" / "x.csv" and params.labels == Path("/srv/y.csv")


def test_a_frozen_parameter_model_gets_absolute_paths_too(tmp_path, monkeypatch) -> None:
    class Frozen(Files):
        model_config = ConfigDict(frozen=True)

    monkeypatch.chdir(tmp_path)
    assert Frozen(data="x.npz").data == tmp_path / "x.npz"


class Shards(Params):
    files: list[Path]
    pair: tuple[Path, Path] | None = None
    named: dict[str, Path] = {}


class Source(StrictModel):
    path: Path


class Sources(Params):
    sources: list[Source]


def test_paths_in_nested_settings_become_absolute_too(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Sources(sources=[{"path": "a.npy"}]).sources[0].path == tmp_path / "a.npy"


def test_paths_in_lists_tuples_and_dicts_become_absolute_too(tmp_path, monkeypatch) -> None:
    """A dataset of npy shards kept its relative paths, so its run folder failed to load from another directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    params = Shards(files=["s0.npy", "~/s1.npy"], pair=("a", "/b"), named={"train": "t.npy"})
    assert params.files == [tmp_path / "s0.npy", tmp_path / "home" / "s1.npy"]
    assert params.pair == (tmp_path / "a", Path("/b")) and params.named == {"train": tmp_path / "t.npy"}
    assert Shards.model_validate(params.model_dump(mode="json")) == params


class Bounds(Params):
    scale: float = 1.0
    widths: list[float] = [1.0]
    clip: float = Field(math.inf, allow_inf_nan=True)
    limits: list[Annotated[float, Field(allow_inf_nan=True)]] = [-math.inf, math.inf]


@pytest.mark.parametrize("field, value", [("scale", math.nan), ("scale", -math.inf), ("widths", [1.0, math.inf])])
def test_non_finite_floats_are_refused(field, value) -> None:
    with pytest.raises(ValidationError) as info:
        Bounds.model_validate({field: value})
    assert [error["type"] for error in info.value.errors()] == ["finite_number"]


def test_a_field_or_a_model_may_opt_back_in_to_infinity() -> None:
    assert Bounds(clip=math.inf, limits=[0.0, math.inf]).clip == math.inf

    class Unbounded(Params):
        model_config = ConfigDict(allow_inf_nan=True)
        scale: float = 1.0

    assert math.isnan(Unbounded(scale=math.nan).scale)
    assert Bounds.model_validate(Bounds().model_dump(mode="json")) == Bounds()  # a dumped spec reads back the same


class Sizes(Params):
    hidden: list[int] = [8]
    bounds: list[list[float]] = []
    clip: float | bool = False  # a bool is meant here
    scale: float = 1.0


@pytest.mark.parametrize("given", [{"hidden": [8, True]}, {"bounds": [[0.0, False]]}, {"scale": True}])
def test_true_or_false_where_a_number_is_wanted_is_refused_at_any_depth(given: dict) -> None:
    with pytest.raises(ValidationError, match="true or false where a number is wanted"):
        Sizes(**given)


def test_a_field_that_takes_a_bool_keeps_it() -> None:
    assert Sizes(clip=True).clip is True and Sizes(clip=0.5).clip == 0.5


class Switches(Params):
    plot: bool = True
    fused: bool | None = None


@pytest.mark.parametrize("given", ["no", "on", "y", "false", 0, 1])
def test_only_true_and_false_are_booleans(given: object) -> None:
    """pydantic read `spectral_norm: no` as false and `compile: y` as true, which the JSON Schema refuses."""
    for field in ("plot", "fused"):
        with pytest.raises(ValidationError, match=r"true or false, not .*only true and false are booleans"):
            Switches(**{field: given})
    assert Switches(plot=False, fused=None) == Switches.model_validate({"plot": False})


class Outer(Params):
    inner: Inner  # defined below: pydantic resolves it on first use
    n: int = 1


class Inner(Params):
    m: int = 1


def test_a_forward_reference_to_a_model_defined_later_still_works_and_is_checked() -> None:
    assert Outer(inner={"m": 2}).inner.m == 2
    with pytest.raises(ValidationError, match="true or false where a number is wanted"):
        Outer(inner={"m": True})


def test_a_bare_ref_annotation_is_told_to_call_ref() -> None:
    from compose_gen import Ref

    with pytest.raises(TypeError, match=r'calling Ref with the kinds it may name, `net: Ref\("network"\)`'):

        class Bare(Params):
            net: Ref = Field(..., description="the network")  # type: ignore[valid-type]
