"""TensorData's fingerprint: the same values give the same hash, whatever the memory layout they are held in."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compose_gen import TensorData


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.from_numpy(np.asfortranarray(np.random.default_rng(0).random((50, 3, 1)))),
        lambda: torch.from_numpy(np.asfortranarray(np.random.default_rng(0).random((50, 3, 1, 1)))),
        lambda: torch.rand(6, 1, 1, 3).permute(0, 3, 1, 2),  # 1x1 RGB images made from channels-last pixels
        lambda: torch.empty_strided((1,), (5,)).fill_(2.0),
        lambda: torch.rand(4, 3, 5, 1).to(memory_format=torch.channels_last),
    ],
)
def test_fingerprint_hashes_values_in_any_layout(make) -> None:
    """``view(torch.uint8)`` needs a last stride of 1, which ``contiguous()`` does not give a size-1 last dimension."""
    value = make()
    packed = value.clone(memory_format=torch.contiguous_format)
    assert TensorData({"x": value}).fingerprint() == TensorData({"x": packed}).fingerprint()


def test_fingerprint_tells_values_apart() -> None:
    x = torch.from_numpy(np.asfortranarray(np.zeros((5, 3, 1))))
    assert TensorData({"x": x}).fingerprint() != TensorData({"x": x + 1}).fingerprint()
