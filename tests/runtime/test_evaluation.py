"""Where the files metrics write go."""

from __future__ import annotations

import shutil

import pytest

from compose_gen.runtime.evaluation import metric_folder


def test_files_for_a_run_folder_that_cannot_be_written_go_to_a_temporary_folder_that_is_named(tmp_path) -> None:
    """An archived, read-only run is still evaluated; a folder the caller chose elsewhere must be writable."""
    (tmp_path / "file").touch()
    run_dir = tmp_path / "file" / "run"  # below a file: unwritable, even for root
    said: list[str] = []
    for wanted in (None, run_dir / "evaluation-set"):
        folder = metric_folder(wanted, run_dir, said.append)
        assert folder.is_dir() and folder.name.startswith("compose-gen-run-")
        assert said.pop() == f"warning: {wanted or run_dir}: the files metrics write (grids, plots) cannot go there (Not a directory); they go to {folder}"
        shutil.rmtree(folder)
    with pytest.raises(OSError, match=r"cannot go there \(Not a directory\); give a folder you can write"):
        metric_folder(tmp_path / "file" / "pictures", tmp_path / "run", said.append)
    assert metric_folder(None, tmp_path / "run", said.append) == tmp_path / "run" and not said
