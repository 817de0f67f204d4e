"""What data a continuous density can pile onto: a few distinct values, or constant features."""

from __future__ import annotations

import torch

from compose_gen_plugins.datasets.limits import continuous_density_caveat, few_values, float32_overflow


def test_the_caveat_names_discrete_data_and_constant_features_and_passes_continuous_data() -> None:
    g = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 17, (300, 64), generator=g) / 17
    assert continuous_density_caveat(grey) == "the data take only 17 distinct values (0..0.941176)"
    points = torch.randn(300, 3, generator=g)
    assert continuous_density_caveat(points) is None
    points[:, 1] = 2.5
    assert continuous_density_caveat(points) == "1 feature(s) are constant in the train split (flat index 1)"
    assert continuous_density_caveat(points[:1]) is None, "one example makes no feature constant"
    assert few_values(points) is None, "a constant feature is not a grid"


def test_float32_overflow_finds_the_first_value_beyond_float32_whatever_the_chunk() -> None:
    x = torch.zeros(7, 5, 3, dtype=torch.float64)
    assert float32_overflow(x) is None and float32_overflow(x.long()) is None
    x[4, 2, 1], x[5, 0, 0] = 1e39, float("inf")
    for chunk in (1, 4, 16, 2**22):
        assert float32_overflow(x, chunk) == (4, 2, 1)
    x[4, 2, 1] = 3e38  # within float32's range
    assert float32_overflow(x, chunk=4) == (5, 0, 0)
