"""Decoders read a network's output as their distribution's parameters, and say what size they need."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compose_gen_plugins.latent.conditionals import BernoulliDecoder, GaussianDecoder


@pytest.mark.parametrize(
    ("decoder", "given", "needed"),
    [
        (lambda net: BernoulliDecoder(net, (6,)), 7, 6),
        (lambda net: GaussianDecoder(net, (6,), 1, "predicted", 1.0), 6, 12),
    ],
)
def test_a_network_of_the_wrong_output_size_is_told_the_size_the_decoder_needs(decoder, given, needed) -> None:
    with pytest.raises(ValueError, match=rf"the network gives {given} numbers per example, this decoder needs {needed} "):
        decoder(nn.Linear(4, given))(torch.zeros(3, 2, 4)).log_prob(torch.zeros(3, 2, 6))


def test_decoders_broadcast_over_prepended_sample_dimensions() -> None:
    decoder = GaussianDecoder(nn.Linear(4, 12), (6,), 1, "predicted", 1.0)
    assert decoder(torch.zeros(5, 3, 4)).log_prob(torch.zeros(3, 6)).shape == (5, 3)
