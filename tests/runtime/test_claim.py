"""One writer per run folder: a live other writer is refused, an ended one taken over, the same process re-enters."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from runtime_toys import AUTOENCODER, spec_dict

from compose_gen.runtime import Run
from compose_gen.runtime.claim import CLAIM_FILE, FolderBusy, claimed
from compose_gen.spec import load_spec


def claim_by(tmp_path, process: subprocess.Popen) -> None:
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
