"""Make ``runtime_toys`` (test-only plugins and tiny specs) importable by the runtime tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import runtime_toys  # noqa: E402


@pytest.fixture(scope="session")
def toys_catalogue():
    return runtime_toys.catalogue()
