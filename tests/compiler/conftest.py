"""Make ``game_toys`` importable by the compiler's tests, and give them a catalogue with its loss and a fresh copy of its spec."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from game_toys import TOY, toy_gan_spec  # noqa: E402

from compose_gen import make_catalogue  # noqa: E402


@pytest.fixture(scope="module")
def toy_catalogue():
    return make_catalogue([TOY])


@pytest.fixture
def gan_spec() -> dict:
    return toy_gan_spec()
