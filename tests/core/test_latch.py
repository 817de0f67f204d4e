"""The set-once flag of data-dependent initialisation: checkpointed, and read from the device only until set."""

from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file

from compose_gen import Latch


def test_a_latch_stays_set_and_answers_from_python_once_set() -> None:
    latch = Latch()
    assert not latch
    latch.set()
    assert latch and bool(latch.value)
    latch.value.fill_(False)  # no device read once it is known to be set
    assert latch
    assert Latch(True)


def test_a_restored_latch_is_set(tmp_path) -> None:
    trained = Latch()
    trained.set()
    save_file(trained.state_dict(), tmp_path / "latch.safetensors")
    restored = Latch()
    assert not restored
    restored.load_state_dict(load_file(tmp_path / "latch.safetensors"))
    restored.value.fill_(False)  # read when loaded: a resumed compiled step reading it would break its graph
    assert restored and list(restored.state_dict()) == ["value"]


def test_an_unset_latch_rereads_its_buffer() -> None:
    latch = Latch()
    assert not latch
    latch.load_state_dict({"value": torch.tensor(True)})
    assert latch


def test_loading_an_unset_state_unsets_a_set_latch() -> None:
    """The dry run initialises from data, then loads back the state it started from: training must initialise again."""
    latch = Latch()
    before = {k: v.clone() for k, v in latch.state_dict().items()}
    latch.set()
    latch.load_state_dict(before)
    assert not latch
