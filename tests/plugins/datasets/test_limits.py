"""What a dataset's values must fit: float32's range."""

from __future__ import annotations

import torch

from compose_gen_plugins.datasets.limits import float32_overflow


def test_float32_overflow_finds_the_first_value_beyond_float32_whatever_the_chunk() -> None:
    x = torch.zeros(7, 5, 3, dtype=torch.float64)
    assert float32_overflow(x) is None and float32_overflow(x.long()) is None
    x[4, 2, 1], x[5, 0, 0] = 1e39, float("inf")
    for chunk in (1, 4, 16, 2**22):
        assert float32_overflow(x, chunk) == (4, 2, 1)
    x[4, 2, 1] = 3e38  # within float32's range
    assert float32_overflow(x, chunk=4) == (5, 0, 0)
