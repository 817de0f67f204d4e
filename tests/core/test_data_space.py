"""The data-space convention: what data a continuous density can pile onto (a few distinct values, constant features)."""

from __future__ import annotations

import torch

from compose_gen.core import continuous_density_caveat, few_values


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
