"""One writer per run folder: a live other writer is refused, an ended one or a copied claim taken over, the same process re-enters."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from runtime_toys import AUTOENCODER, errors_without_waiting, forked, spec_dict

from compose_gen.runtime import CheckpointError, Run
from compose_gen.runtime.claim import FolderBusy, claimed
from compose_gen.runtime.layout import CLAIM_FILE
from compose_gen.spec import load_spec


def claim_by(tmp_path, process: subprocess.Popen) -> None:
    """A claim as earlier versions wrote it, naming no folder: still honoured."""
    (tmp_path / CLAIM_FILE).write_text(f"{socket.gethostname()} {process.pid}")


def test_a_folder_another_live_process_writes_is_refused_and_left_alone(tmp_path, toys_catalogue) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim_by(tmp_path, other)
        with pytest.raises(FolderBusy, match=rf"is being written by another training \(host and process .* {other.pid}\)"):
            with claimed(tmp_path):
                pass
        spec = load_spec(spec_dict(AUTOENCODER, steps=2), catalogue=toys_catalogue)
        with pytest.raises(FolderBusy):
            Run.create(spec, tmp_path, progress=False)
        assert not (tmp_path / "spec.yaml").exists(), "the other training's folder is not written to"
        assert (tmp_path / CLAIM_FILE).read_text().endswith(str(other.pid))
    finally:
        other.kill()
        other.wait()


def test_evaluating_into_a_folder_another_live_process_trains_is_refused_and_records_nothing(tmp_path, toys_catalogue) -> None:
    """Its results would be recorded beside the training's own, of a checkpoint the training is replacing; evaluating
    for the caller alone (``record=False``) reads only, and goes on."""
    spec = load_spec(spec_dict(AUTOENCODER, steps=2), catalogue=toys_catalogue)
    Run.create(spec, tmp_path, progress=False).train()
    (tmp_path / "evaluation.json").unlink(missing_ok=True)
    run = Run.load(tmp_path, catalogue=toys_catalogue, progress=False)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim_by(tmp_path, other)
        with pytest.raises(FolderBusy, match=rf"is being written by another training \(host and process .* {other.pid}\)"):
            run.evaluate()
        assert not (tmp_path / "evaluation.json").exists()
        assert run.evaluate(tmp_path / "elsewhere", record=False)["step"] == 2
    finally:
        other.kill()
        other.wait()


def test_the_claim_of_an_ended_process_is_taken_over_and_the_own_one_reentered(tmp_path) -> None:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    claim_by(tmp_path, ended)
    with claimed(tmp_path):
        mine = (tmp_path / CLAIM_FILE).read_text()
        assert not mine.endswith(f" {ended.pid}")
        with claimed(tmp_path):  # re-entrant: a run created, then trained, by one process
            pass
        assert (tmp_path / CLAIM_FILE).read_text() == mine, "the inner block leaves the outer claim"
    assert not (tmp_path / CLAIM_FILE).exists()


def test_another_thread_of_the_same_process_is_refused(tmp_path) -> None:
    """The claim file names the process, so two threads once both passed as its re-entry and wrote one folder."""
    outcome: list[BaseException | None] = []

    def second() -> None:
        try:
            with claimed(tmp_path):
                outcome.append(None)
        except FolderBusy as error:
            outcome.append(error)

    with claimed(tmp_path):
        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
    assert isinstance(outcome[0], FolderBusy) and "another thread of this process" in str(outcome[0])
    thread = threading.Thread(target=second)  # released: now it may
    thread.start()
    thread.join()
    assert outcome[1] is None and not (tmp_path / CLAIM_FILE).exists()


def _claim(folder: Path) -> int:
    """In a child process: 0 if it could claim ``folder``, 3 if that was refused."""
    try:
        with claimed(folder):
            return 0
    except FolderBusy:
        return 3


def test_a_copy_of_a_folder_being_written_can_be_claimed_and_the_original_cannot(tmp_path) -> None:
    """``cp -r`` of a live run copies its claim, which names the original folder: the copy's claimant takes it over."""
    original, copy = tmp_path / "run", tmp_path / "copy"
    original.mkdir()
    with claimed(original):
        shutil.copytree(original, copy)
        assert (copy / CLAIM_FILE).read_text() == (original / CLAIM_FILE).read_text()
        children = {folder: forked(_claim, folder) for folder in (copy, original)}
        for child in children.values():
            child.join(60)
        assert children[copy].exitcode == 0 and children[original].exitcode == 3
        shutil.copy2(original / CLAIM_FILE, copy / CLAIM_FILE)
        with claimed(copy):  # this process too takes the copied claim over, rather than re-entering its own
            assert json.loads((copy / CLAIM_FILE).read_text())["folder"] == os.path.realpath(copy)
        assert not (copy / CLAIM_FILE).exists()
        assert json.loads((original / CLAIM_FILE).read_text())["folder"] == os.path.realpath(original)
    assert not (original / CLAIM_FILE).exists()


def test_a_live_training_before_its_first_checkpoint_is_named_not_taken_for_stale_records(tmp_path, toys_catalogue) -> None:
    """Its log has lines and its folder no checkpoint yet: resuming or reusing the folder says who writes it."""
    spec = load_spec(spec_dict(AUTOENCODER, steps=2), catalogue=toys_catalogue)
    Run.create(spec, tmp_path, progress=False)
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 100, "loss": 1.0}) + "\n")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim_by(tmp_path, other)
        for attempt in (
            lambda: Run.create(spec, tmp_path, progress=False),
            lambda: Run.load(tmp_path, catalogue=toys_catalogue),
            lambda: Run.load(tmp_path, catalogue=toys_catalogue, trained=True),  # sample, evaluate, load_run
        ):
            with pytest.raises(FolderBusy, match=rf"is being written by another training \(host and process .* {other.pid}\)"):
                attempt()
    finally:
        other.kill()
        other.wait()
    with pytest.raises(CheckpointError, match="holds no checkpoint, but metrics.jsonl"):  # once it has ended, the records are stale
        Run.load(tmp_path, catalogue=toys_catalogue)


def test_a_stale_claim_taken_over_by_another_training_meanwhile_is_not_deleted(tmp_path, monkeypatch) -> None:
    """Between reading a stale claim and removing it, another training may take the folder over; deleting whatever the file
    then held deleted that training's fresh claim, and both wrote the folder."""
    import compose_gen.runtime.claim as claim

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim_by(tmp_path, ended)
        read = claim._read

        def read_then_another_takes_over(path):
            result = read(path)
            if path.name == CLAIM_FILE and result[0].endswith(f" {ended.pid}"):  # this process judged it stale...
                claim_by(tmp_path, other)  # ... and the other training took it over in the meantime
            return result

        monkeypatch.setattr(claim, "_read", read_then_another_takes_over)
        with pytest.raises(FolderBusy, match="claimed by another training just now"):
            with claimed(tmp_path):
                pass
        assert (tmp_path / CLAIM_FILE).read_text().endswith(f" {other.pid}"), "the other training's claim stands"
        assert [p.name for p in tmp_path.iterdir()] == [CLAIM_FILE], "and nothing is left aside"
    finally:
        other.kill()
        other.wait()


def test_a_claim_appears_whole_so_no_taker_ever_reads_it_empty(tmp_path, monkeypatch) -> None:
    """Created empty and written after, a claim read in between looked stale (no owner) and was deleted by another taker."""
    import compose_gen.runtime.claim as claim

    seen = []
    link = os.link

    def link_and_look(source, target):
        link(source, target)
        seen.append(json.loads(Path(target).read_text())["writer"])  # what another process reading it now would find

    monkeypatch.setattr(claim.os, "link", link_and_look)
    with claimed(tmp_path):
        assert seen == [f"{socket.gethostname()} {os.getpid()}"]
    assert list(tmp_path.iterdir()) == [], "neither the claim nor its draft stays"


def test_a_folder_that_cannot_be_written_is_named_not_the_claim_s_draft_file(tmp_path, monkeypatch) -> None:
    def read_only(path: Path, *args: object, **kwargs: object) -> None:  # a read-only folder, which root does not get
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "write_text", read_only)
    with pytest.raises(PermissionError, match=rf"^\[Errno 13\] {tmp_path}: the run folder cannot be written \(Permission denied\), so nothing can train into it$"):
        with claimed(tmp_path):
            pass


def test_a_claim_whose_draft_the_disk_has_no_room_for_leaves_no_part_of_it(tmp_path, monkeypatch) -> None:
    """A full disk left a begun ``.writer.new-*`` in the run folder, which nothing removed."""
    write_text = Path.write_text

    def full(path: Path, data: str, *args: object, **kwargs: object) -> None:
        write_text(path, data[:3])
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match=r"the run folder cannot be written \(No space left on device\)"):
        with claimed(tmp_path):
            pass
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_claim_names_no_writer_and_is_taken_over_and_a_folder_in_its_place_is_named(tmp_path) -> None:
    """Bytes that are no UTF-8 stopped train and evaluate with a bare codec error naming no file, though no writer lived."""
    claim = tmp_path / CLAIM_FILE
    for damaged in (b"\xff\xfe garbage", b"", b"[1, 2]"):
        claim.write_bytes(damaged)
        with claimed(tmp_path):
            assert json.loads(claim.read_text())["writer"].endswith(f" {os.getpid()}")
        assert not claim.exists()
    claim.mkdir()
    with pytest.raises(IsADirectoryError, match=rf"{CLAIM_FILE} is a folder, where compose_gen keeps the file naming the process .*: remove it$"):
        with claimed(tmp_path):
            pass


def test_a_fifo_or_device_in_the_claim_s_place_is_named_not_waited_on_or_read_without_end(tmp_path) -> None:
    """A FIFO named .writer hung train --resume and evaluate for good (and a link to /dev/zero would read forever)."""
    claim = tmp_path / CLAIM_FILE
    os.mkfifo(claim)

    def claim_it() -> None:
        with claimed(tmp_path):
            pass

    outcome = errors_without_waiting([claim_it], lambda: tmp_path.glob(f"{CLAIM_FILE}*"))  # set aside as stale too
    message = rf"{CLAIM_FILE} is not a regular file, where compose_gen keeps the file naming the process .*: remove it$"
    assert len(outcome) == 1 and re.search(message, str(outcome[0]))
    claim.unlink()
    claim.symlink_to("/dev/zero")
    with pytest.raises(OSError, match=message):
        with claimed(tmp_path):
            pass
