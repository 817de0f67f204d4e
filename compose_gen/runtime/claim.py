"""One writer per run folder: a training claims its folder, and a second one is refused.

Two ``compose-gen train --out DIR`` started together would otherwise both pass
the "no checkpoints yet" check and interleave their spec, log and checkpoints.
The claim is a file ``.writer`` in the folder holding the writer's host and
process id, created exclusively; a claim whose process has ended (a crash, a
kill) is taken over, so no manual cleanup is needed after one.  It names the
folder it claims too (real path, device and inode): a copy of a folder still
being trained (``cp -r``) holds the original's claim, which is taken over as well.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import stat
import threading
from pathlib import Path
from typing import Iterator

from compose_gen.runtime.layout import CLAIM_FILE

__all__ = ["FolderBusy", "claimed", "refuse_if_busy"]

#: The folders this process writes, by real path, with the thread that writes each and how deeply it has claimed it:
#: the claim file names the process, so two threads of one process are told apart here.
_held: dict[str, tuple[int, int]] = {}
_held_lock = threading.Lock()

#: The most of a claim file that is read: a claim is one short line; a longer one is damaged, and so taken over as stale.
CLAIM_LIMIT = 1 << 16


class FolderBusy(FileExistsError):
    """Another live process is writing the run folder."""


def _me() -> str:
    return f"{socket.gethostname()} {os.getpid()}"


def _alive(owner: str) -> bool:
    """Whether the process ``"host pid"`` runs; on another host it cannot be told, so it is taken to."""
    host, _, pid = owner.rpartition(" ")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user
        return True
    return True


def _folder(run_dir: Path) -> dict[str, str | int]:
    """What tells ``run_dir`` from a copy of it: its inode on its device (its real path is for people reading the claim)."""
    info = os.stat(run_dir)
    return {"folder": os.path.realpath(run_dir), "device": info.st_dev, "inode": info.st_ino}


def _take(path: Path) -> bool:
    """Create the claim file of its folder for this process, whole at once; False if it exists.

    The claim is written beside it and hard-linked into place, which fails if the file exists: created
    empty and then written, it could be read empty, taken for stale and deleted by another taker.
    A file system without hard links gets the claim created exclusively, then written.
    """
    record = json.dumps({"writer": _me(), **_folder(path.parent)})
    draft = path.with_name(f"{path.name}.new-{os.getpid()}-{threading.get_ident()}")
    try:
        draft.write_text(record)
    except OSError as error:  # named by the folder, not by the draft no one knows of, which a full disk leaves begun
        draft.unlink(missing_ok=True)
        raise OSError(error.errno, f"{path.parent}: the run folder cannot be written ({error.strerror}), so nothing can train into it") from None
    try:
        os.link(draft, path)
    except FileExistsError:
        return False
    except OSError:  # no hard links here
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(record)
    finally:
        draft.unlink(missing_ok=True)
    return True


def _read(path: Path) -> tuple[str, bool]:
    """The claim's writer ``"host pid"``, and whether the claim was made for the folder it is in.

    A claim written on another host, or by an earlier version (the bare
    ``"host pid"``), cannot be told apart from its folder's own, so it is taken to be that.
    A damaged one (neither) names no writer: ``""``, which is taken over as stale.
    """
    # opened without waiting and read to a bound: a FIFO in its place hung train and evaluate, a link to a device fed them without end
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        kind = os.fstat(fd).st_mode
        if stat.S_ISDIR(kind):
            raise IsADirectoryError(
                errno.EISDIR, f"{path} is a folder, where compose_gen keeps the file naming the process that writes the run folder: remove it"
            )
        if not stat.S_ISREG(kind):
            raise OSError(
                errno.EINVAL,
                f"{path} is not a regular file, where compose_gen keeps the file naming the process that writes the run folder: remove it",
            )
        text = os.read(fd, CLAIM_LIMIT).decode("utf-8", errors="replace").strip()
    finally:
        os.close(fd)
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        return (text if re.fullmatch(r"\S+ \d+", text) else ""), True
    owner = str(record.get("writer", ""))
    here = _folder(path.parent)
    same = owner.rpartition(" ")[0] != socket.gethostname() or all(record.get(key) == here[key] for key in ("device", "inode"))
    return owner, same


def _set_aside(path: Path, stale: str) -> None:
    """Remove the claim at ``path`` judged ``stale`` (its writer's ``"host pid"``), unless another taker replaced it meanwhile.

    The claim is renamed away first, atomically, and then checked: deleting whatever ``path``
    held would delete the fresh claim of a training that took the folder over since it was read,
    and both would write.  Such a claim is put back, and the folder is then busy.
    """
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}-{threading.get_ident()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # another taker moved it first; its claim, if made, stops ours
        return
    try:
        moved, _ = _read(aside)
    except (OSError, ValueError):
        moved = None
    if moved is not None and moved != stale:
        os.rename(aside, path)
        return
    aside.unlink(missing_ok=True)


def _busy(run_dir: Path, owner: str) -> FolderBusy:
    return FolderBusy(
        f"{run_dir} is being written by another training (host and process {owner}): wait for it to end, "
        f"or choose another folder (if no such process runs, delete {Path(run_dir) / CLAIM_FILE})"
    )


def refuse_if_busy(run_dir: Path) -> None:
    """:class:`FolderBusy` if another live process writes ``run_dir``: looked at, not claimed, so that a
    command says so before it judges the folder by what the writer has written so far."""
    try:
        owner, here = _read(Path(run_dir) / CLAIM_FILE)
    except FileNotFoundError:
        return
    if here and owner and owner != _me() and _alive(owner):
        raise _busy(run_dir, owner)


@contextlib.contextmanager
def claimed(run_dir: Path) -> Iterator[None]:
    """This thread writes ``run_dir`` inside the block (re-entrant); :class:`FolderBusy` while another live process,
    or another thread of this one, does."""
    key, me = os.path.realpath(run_dir), threading.get_ident()
    with _held_lock:
        thread, depth = _held.get(key, (me, 0))
        if thread != me:
            raise FolderBusy(f"{run_dir} is being written by another thread of this process: wait for it, or choose another folder")
        _held[key] = (me, depth + 1)
    try:
        with _claimed_by_process(run_dir):
            yield
    finally:
        with _held_lock:
            thread, depth = _held[key]
            if depth > 1:
                _held[key] = (thread, depth - 1)
            else:
                del _held[key]


@contextlib.contextmanager
def _claimed_by_process(run_dir: Path) -> Iterator[None]:
    path = Path(run_dir) / CLAIM_FILE
    fresh = _take(path)
    if not fresh:
        try:
            owner, here = _read(path)
        except FileNotFoundError:  # released meanwhile
            owner, here = "", True
        if not (here and owner == _me()):
            if here and owner and _alive(owner):
                raise _busy(run_dir, owner)
            _set_aside(path, owner)  # its writer has ended, or it was copied with the folder: take over
            if not _take(path):
                raise FolderBusy(f"{run_dir} was claimed by another training just now: choose another folder")
            fresh = True
    try:
        yield
    finally:
        if fresh:
            path.unlink(missing_ok=True)
