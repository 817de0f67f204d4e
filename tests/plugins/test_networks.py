"""The MLP network: shaped inputs and outputs, extra leading dimensions, a context read beside the input."""

from __future__ import annotations

import pytest
import torch

from compose_gen_plugins.networks import MLP


def test_flattens_and_reshapes_events_over_any_leading_dims() -> None:
    torch.manual_seed(0)
    net = MLP([1, 8, 8], [2, 3], hidden=[16])
    x = torch.randn(5, 4, 1, 8, 8)
    y = net(x)
    assert y.shape == (5, 4, 2, 3)
    torch.testing.assert_close(y[2, 1], net(x[2, 1]))  # batched matmuls differ in the last bits: not allclose's atol=1e-8


def test_output_squashing_and_depth() -> None:
    net = MLP(3, 2, hidden=[8, 8, 8], activation="tanh", output="sigmoid")
    assert sum(isinstance(m, torch.nn.Linear) for m in net.modules()) == 4
    y = net(torch.randn(100, 3) * 10)
    assert ((y > 0) & (y < 1)).all()


def test_a_conditional_mlp_reads_the_context_beside_the_input() -> None:
    """``net(x, c)`` is the same MLP applied to ``[x ‖ c]``: the first layer's weight splits into an x and a c block."""
    torch.manual_seed(0)
    net = MLP([1, 2, 2], 3, hidden=[8], activation="tanh", context_features=2)
    x, c = torch.randn(5, 1, 2, 2), torch.randn(5, 2)
    first, activation, last = net.net
    weight_x, weight_c = first.weight.split([4, 2], dim=1)
    expected = last(torch.tanh(x.flatten(1) @ weight_x.T + c @ weight_c.T + first.bias))
    torch.testing.assert_close(net(x, c), expected)
    assert not torch.allclose(net(x, c), net(x, c + 1)), "the output depends on the context"


def test_a_batch_context_broadcasts_over_leading_sample_dims() -> None:
    torch.manual_seed(0)
    net = MLP(4, 3, hidden=[8], context_features=2)
    x, c = torch.randn(3, 5, 4), torch.randn(5, 2)
    y = net(x, c)
    assert y.shape == (3, 5, 3)
    for s in range(3):
        torch.testing.assert_close(y[s], net(x[s], c))
    torch.testing.assert_close(net(x, c.expand(3, 5, 2)), y)


def test_a_missing_or_unexpected_context_is_refused() -> None:
    conditional, plain = MLP(4, 3, hidden=[8], context_features=2), MLP(4, 3, hidden=[8])
    x = torch.randn(5, 4)
    with pytest.raises(ValueError, match="conditional: it needs a context of 2 features, got none"):
        conditional(x)
    with pytest.raises(ValueError, match="takes no context"):
        plain(x, torch.randn(5, 2))
    with pytest.raises(ValueError, match="expects a context of 2 features"):
        conditional(x, torch.randn(5, 3))
    with pytest.raises(ValueError, match="does not broadcast"):
        conditional(x, torch.randn(4, 2))


def test_a_float32_context_is_cast_to_a_float64_input() -> None:
    """Contexts like ``one_hot(y, 10)`` come as float32 whatever the model's dtype."""
    torch.manual_seed(0)
    net = MLP(4, 3, hidden=[8], context_features=2).double()
    x, c = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 2)
    y = net(x, c)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, net(x, c.double()))


@pytest.mark.parametrize(
    ("type_name", "params"),
    [
        ("mlp", {"in_features": 2, "out_features": 2, "hidden": [0, 8]}),
        ("mlp", {"in_features": -64, "out_features": 2}),
        ("mlp", {"in_features": [8, -8], "out_features": 2}),
        ("mlp_generator", {"latent_dim": 2, "hidden": [0]}),
        ("mlp_generator", {"latent_dim": 2, "out_shape": [0]}),
        ("mlp_critic", {"hidden": [0]}),
        ("mlp_critic", {"in_shape": [-2]}),
        ("standard_normal", {"shape": [-16]}),
        ("diagonal_normal", {"shape": [0]}),
        ("bernoulli_decoder", {"net": "net", "event_shape": [1, 8, 0]}),
        ("conv_encoder", {"latent": 4, "image_shape": [1, 8, 0]}),
    ],
)
def test_a_size_of_zero_or_less_is_refused(type_name: str, params: dict) -> None:
    """A zero-width layer cut the network off from its input: a critic of hidden: [0] was a constant, every gradient 0,
    and it trained on (torch only warns that the init is a no-op); negative sizes failed in torch's words."""
    from pydantic import ValidationError

    from compose_gen import make_catalogue

    with pytest.raises(ValidationError, match="greater than 0"):
        make_catalogue().get(type_name).params(**params)


@pytest.mark.parametrize(
    ("type_name", "params"),
    [("standard_normal", {"shape": [10**9]}), ("mlp", {"in_features": 2, "out_features": 2, "hidden": [10**9]}), ("mlp_critic", {"in_shape": [2**24 + 1]})],
)
def test_a_size_beyond_max_size_is_refused(type_name: str, params: dict) -> None:
    """A prior of shape [10⁹] made validate allocate gigabytes until the machine ran out of memory."""
    from pydantic import ValidationError

    from compose_gen import make_catalogue

    with pytest.raises(ValidationError, match="less than or equal to 16777216"):
        make_catalogue().get(type_name).params(**params)


def test_an_mlp_given_images_of_its_width_says_how_to_flatten_them() -> None:
    with pytest.raises(ValueError, match=r"got \(5, 1, 4, 4\), which ends in \(4,\); to read images as vectors, give the dataset `shape: flat`"):
        MLP(16, 4)(torch.zeros(5, 1, 4, 4))
    with pytest.raises(ValueError, match=r"got \(5, 3\), which ends in \(3,\)$"):
        MLP(16, 4)(torch.zeros(5, 3))
