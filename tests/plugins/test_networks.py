"""The MLP network: shaped inputs and outputs, extra leading dimensions."""

from __future__ import annotations

import torch

from compose_gen_plugins.networks import MLP


def test_flattens_and_reshapes_events_over_any_leading_dims() -> None:
    net = MLP([1, 8, 8], [2, 3], hidden=[16])
    x = torch.randn(5, 4, 1, 8, 8)
    y = net(x)
    assert y.shape == (5, 4, 2, 3)
    assert torch.allclose(y[2, 1], net(x[2, 1]))


def test_output_squashing_and_depth() -> None:
    net = MLP(3, 2, hidden=[8, 8, 8], activation="tanh", output="sigmoid")
    assert sum(isinstance(m, torch.nn.Linear) for m in net.modules()) == 4
    y = net(torch.randn(100, 3) * 10)
    assert ((y > 0) & (y < 1)).all()
