"""Make ``component_kit_helpers`` importable by the component kit's tests, and build the shipped components from the catalogue."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from component_kit_helpers import Inline  # noqa: E402


@pytest.fixture(scope="module")
def build(catalogue):
    torch.manual_seed(0)
    return Inline(catalogue).component


@pytest.fixture(scope="module")
def inputs():
    generator = torch.Generator().manual_seed(0)
    return {"z": torch.randn(5, 3, generator=generator), "x": torch.rand(5, 6, generator=generator), "c": torch.randn(5, 2, generator=generator)}

