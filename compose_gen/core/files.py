"""Reading the small text files a user may have been handed (specs, a run folder's JSON records) without trusting them,
and writing such records so that a crash leaves the old file or the new one."""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "TEXT_LIMIT",
    "fsync",
    "json_text",
    "make_parent",
    "parse_json",
    "read_json",
    "read_text_file",
    "regular_file_stat",
    "replaced_atomically",
    "write_json_atomic",
    "write_text_atomic",
]

#: The most such a file is read to: thousands of times the size of any real spec or record.
TEXT_LIMIT = 64 * 2**20


def regular_file_stat(path: Path) -> os.stat_result:
    """``path``'s stat, or OSError for anything but a regular file: a FIFO in a run folder would hang every command that
    reads it, and a link to a device feed it without end."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return info


def read_text_file(path: Path, limit: int = TEXT_LIMIT, regular: bool = True) -> str:
    """The UTF-8 text of ``path``.

    Raises OSError for anything but a regular file (a FIFO in a run folder would hang every command
    that reads it) unless ``regular`` is False (a spec the user pipes in: ``<(...)``), or for more than ``limit``
    bytes (a link to ``/dev/zero`` is cut off there); UnicodeDecodeError for bytes that are no UTF-8.
    """
    if regular:
        regular_file_stat(path)
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"more than {limit // 2**20} MiB, far beyond any spec or record", str(path))
    return data.decode("utf-8")


def parse_json(text: str) -> Any:
    """``json.loads``, with nesting too deep for Python's parser a ValueError like any other malformed JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def read_json(path: Path) -> Any:
    """The JSON at ``path`` (:func:`read_text_file`, :func:`parse_json`): OSError or ValueError when it cannot be read."""
    return parse_json(read_text_file(path))


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` for the block to write; once it is written (and fsynced) it replaces ``path``.

    A crash leaves the old file or the new; a failed write (a full disk) removes the temporary file and raises an
    ``OSError`` that names ``path``, never leaving part of a file in its place.
    """
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name[:64]}")  # as short as a name can be long: the name's own limit holds
    try:
        yield tmp
        fsync(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno is not None:
            raise OSError(error.errno, f"{error.strerror}; not written (a file there before stays)", str(path)) from None
        raise
    fsync(path.parent)


def make_parent(path: Path) -> None:
    """Make the folder ``path`` is written into; a file where one of its folders should be is named (``mkdir`` says
    only "File exists")."""
    above = next((folder for folder in [path.parent, *path.parent.parents] if folder.exists() and not folder.is_dir()), None)
    if above is not None:
        raise NotADirectoryError(f"{above} is a file, so {path} cannot be written below it: give another path")
    path.parent.mkdir(parents=True, exist_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a fsynced temporary file and a rename: a crash leaves the old file or the new."""
    with replaced_atomically(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_text(data: Any, indent: int | None = None) -> str:
    """``data`` as standard JSON: a non-finite float (a metric undefined on degenerate samples) becomes ``null``.

    ``json.dumps`` would write a bare ``NaN`` or ``Infinity``, which JSON readers refuse.
    """

    def finite(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(v) for v in value]
        return value

    return json.dumps(finite(data), indent=indent, allow_nan=False)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (:func:`write_text_atomic`)."""
    write_text_atomic(path, json_text(data, indent=1))


def fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
