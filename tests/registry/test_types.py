"""The parameter-model base: file paths resolved once, at load time."""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict

from compose_gen import Params


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
