"""Small text files from someone else are read only when they are regular files of a sane size."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from compose_gen.core.files import parse_json, read_json, read_text_file


def test_a_regular_file_is_read_as_utf8(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text("name: é\n", encoding="utf-8")
    assert read_text_file(tmp_path / "spec.yaml") == "name: é\n"
    (tmp_path / "latin.yaml").write_bytes("name: é\n".encode("latin-1"))
    with pytest.raises(UnicodeDecodeError):
        read_text_file(tmp_path / "latin.yaml")


def test_what_is_no_regular_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    """A FIFO would block the reader for ever, a link to /dev/zero fill memory."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zeros").symlink_to("/dev/zero")
    (tmp_path / "folder").mkdir()
    for name in ("fifo", "zeros", "folder"):
        with pytest.raises(OSError) as caught:
            read_text_file(tmp_path / name)
        assert (caught.value.strerror, caught.value.filename) == ("not a regular file", str(tmp_path / name))
    with pytest.raises(FileNotFoundError):
        read_text_file(tmp_path / "missing")


def test_a_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    (tmp_path / "big.json").write_text("x" * 2**20 + "y")
    assert len(read_text_file(tmp_path / "big.json", limit=2**20 + 1)) == 2**20 + 1
    with pytest.raises(OSError, match="more than 1 MiB"):
        read_text_file(tmp_path / "big.json", limit=2**20)


def test_a_pipe_is_read_when_asked_for_and_an_endless_source_cut_off_at_the_limit(tmp_path: Path) -> None:
    """A spec given as ``<(...)`` is a pipe; /dev/zero never ends."""
    import threading

    os.mkfifo(tmp_path / "fifo")
    writer = threading.Thread(target=lambda: (tmp_path / "fifo").write_text("name: piped\n"))
    writer.start()
    assert read_text_file(tmp_path / "fifo", regular=False) == "name: piped\n"
    writer.join()
    with pytest.raises(OSError, match="more than 1 MiB"):
        read_text_file(Path("/dev/zero"), limit=2**20, regular=False)


def test_json_nested_deeper_than_the_parser_recurses_is_malformed_json_like_any_other(tmp_path: Path) -> None:
    """json.loads raises RecursionError there, which callers that catch ValueError for a damaged record let through."""
    (tmp_path / "state.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="^JSON nested too deeply$"):
        read_json(tmp_path / "state.json")
    assert parse_json('{"step": [1, 2]}') == {"step": [1, 2]}
    with pytest.raises(ValueError):
        parse_json("{not json")


def test_a_write_that_fails_leaves_the_old_file_and_no_part_of_the_new_and_names_the_file(tmp_path: Path) -> None:
    """A full disk left a truncated sample PNG in place and a .tmp-spec.yaml-PID that nothing removed, with an error
    that named no file."""
    from compose_gen.core.files import replaced_atomically, write_text_atomic

    target = tmp_path / "spec.yaml"
    write_text_atomic(target, "old\n")
    with pytest.raises(OSError, match=r"No space left on device; not written \(a file there before stays\): '.*spec.yaml'"):
        with replaced_atomically(target) as tmp:
            with open(tmp, "w") as handle:
                handle.write("half of the new")
                raise OSError(28, os.strerror(28))
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]
    with pytest.raises(KeyboardInterrupt):  # anything else that stops the write leaves no temporary file either
        with replaced_atomically(target) as tmp:
            tmp.write_text("x")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]
