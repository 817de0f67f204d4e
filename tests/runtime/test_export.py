"""Samples written to files: arrays and pictures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from compose_gen.runtime.export import save_array


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_an_array_whose_write_fails_leaves_the_file_there_before(tmp_path: Path, suffix: str, monkeypatch) -> None:
    """A full disk left a torn samples.npy in place of the good one, with an error ("128000 requested and 13280
    written") that named no file."""
    out = save_array(tmp_path / f"samples{suffix}", torch.zeros(3, 2), torch.arange(3))
    old = out.read_bytes()

    def torn(handle: object, *args: object, **kwargs: object) -> None:
        handle.write(b"half of the new")  # type: ignore[attr-defined]
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(np, "save", torn)
    monkeypatch.setattr(np, "savez", torn)
    with pytest.raises(OSError, match=rf"No space left on device; not written \(a file there before stays\): '.*samples\{suffix}'"):
        save_array(out, torch.ones(5, 2), torch.arange(5))
    assert out.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == [out.name]


def test_an_array_below_a_file_names_the_file_in_the_way(tmp_path: Path) -> None:
    """`sample -o afile/x.npy` said only "[Errno 17] File exists: 'afile'"."""
    (tmp_path / "afile").write_text("")
    with pytest.raises(NotADirectoryError, match=rf"{tmp_path / 'afile'} is a file, so {tmp_path / 'afile' / 'x.npy'} cannot be written below it"):
        save_array(tmp_path / "afile" / "x.npy", torch.zeros(3, 2), None)
