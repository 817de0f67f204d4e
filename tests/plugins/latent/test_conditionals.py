"""Decoders read a network's output as their distribution's parameters, and say what size they need."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compose_gen import Splits, TensorData
from compose_gen_plugins.latent.conditionals import (
    BernoulliDecoder,
    CategoricalDecoderParams,
    DecoderParams,
    GaussianDecoder,
    GaussianDecoderParams,
    GaussianEncoder,
    build_bernoulli_decoder,
    build_categorical_decoder,
    build_continuous_bernoulli_decoder,
    ContinuousBernoulliDecoder,
)


@pytest.mark.parametrize(
    ("decoder", "given", "needed"),
    [
        (lambda net: BernoulliDecoder(net, (6,)), 7, 6),
        (lambda net: GaussianDecoder(net, (6,), 1, "predicted", 1.0), 6, 12),
    ],
)
def test_a_network_of_the_wrong_output_size_is_told_the_size_the_decoder_needs(decoder, given, needed) -> None:
    told = rf"the network gives {given} numbers per example, this decoder needs {needed} .*: give an mlp's out_features: {needed}$"
    with pytest.raises(ValueError, match=told):
        decoder(nn.Linear(4, given))(torch.zeros(3, 2, 4)).log_prob(torch.zeros(3, 2, 6))


def test_an_image_decoder_s_network_of_the_wrong_size_is_told_the_conv_decoder_s_image_shape() -> None:
    """A conv_decoder giving one channel to a Gaussian with a predicted scale was told sizes, not which setting to change."""
    decoder = GaussianDecoder(nn.Sequential(nn.Linear(4, 64), nn.Unflatten(-1, (1, 8, 8))), (1, 8, 8), 1, "predicted", 1.0)
    with pytest.raises(ValueError, match=r"needs 128 .*: give a conv_decoder's image_shape: \[2, 8, 8\], or an mlp's out_features: 128$"):
        decoder(torch.zeros(3, 4)).log_prob(torch.zeros(3, 1, 8, 8))


def test_a_latent_rank_that_leaves_z_no_batch_dimension_is_named_before_the_output_size() -> None:
    """latent_rank: 2 on a batch of vectors reads the batch as one latent; the output size only looked wrong."""
    decoder = BernoulliDecoder(nn.Linear(4, 6), (6,), latent_rank=2)
    told = r"needs 6 .*out_features: 6; but first, z of shape \(3, 4\) has no batch dimension before the last 2 that latent_rank: 2"
    with pytest.raises(ValueError, match=told):
        decoder(torch.zeros(3, 4))
    assert BernoulliDecoder(nn.Linear(4, 6), (6,))(torch.zeros(3, 4)).batch_shape == (3,)


def test_an_encoder_network_of_the_wrong_output_size_is_told_the_size_it_needs() -> None:
    with pytest.raises(ValueError, match=r"the network gives 6 numbers per example, this encoder needs 2·latent = 8 \(μ and σ of each of the 4 latents\)"):
        GaussianEncoder(nn.Linear(3, 6), latent=4)(torch.zeros(5, 3))


def test_decoders_broadcast_over_prepended_sample_dimensions() -> None:
    decoder = GaussianDecoder(nn.Linear(4, 12), (6,), 1, "predicted", 1.0)
    assert decoder(torch.zeros(5, 3, 4)).log_prob(torch.zeros(3, 6)).shape == (5, 3)


class _Context:
    """A build context with data x and one network."""

    def __init__(self, x: torch.Tensor, net: nn.Module) -> None:
        self.data = Splits(TensorData({"x": x}), TensorData({"x": x}))
        self.net = net

    def component(self, ref):
        return self.net


def test_a_continuous_bernoulli_decoder_is_exact_where_its_logits_are_large() -> None:
    """At logit 40 the mean is 0.975 and log p(1) = log(40/tanh 20) − softplus(−40) (torch's own class clips λ: 0.937, and
    0.92 nats less)."""
    net = nn.Linear(2, 3)
    nn.init.zeros_(net.weight)
    nn.init.constant_(net.bias, 40.0)
    p = ContinuousBernoulliDecoder(net, (3,))(torch.zeros(5, 2))
    torch.testing.assert_close(p.mean, torch.full((5, 3), 0.975))
    expected = 3 * (torch.tensor(40.0) / torch.tanh(torch.tensor(20.0))).log()
    torch.testing.assert_close(p.log_prob(torch.ones(5, 3)), expected.expand(5))


def test_a_discrete_decoder_refuses_data_off_its_grid() -> None:
    """Digits are k/16, k = 0..16: 17 levels. With 16 a mass would round them silently, and its NLL would not be theirs."""
    x = torch.arange(17.0).repeat(4)[:, None] / 16
    params = CategoricalDecoderParams(net="net", bins=16)
    with pytest.raises(ValueError, match=r"the data's x are not on this decoder's grid of 16 levels from 0 to 1 \(up to 0.5 steps off it\): set bins"):
        build_categorical_decoder(params, _Context(x, nn.Linear(2, 16)))
    with pytest.raises(ValueError, match=r"the data's x reach 0..16, beyond this decoder's levels from 0 to 1: set low and high"):
        build_categorical_decoder(params.model_copy(update={"bins": 17}), _Context(x * 16, nn.Linear(2, 17)))
    build_categorical_decoder(params.model_copy(update={"bins": 17}), _Context(x, nn.Linear(2, 17)))


def test_bernoulli_decoders_refuse_data_outside_their_support() -> None:
    """On grey levels a Bernoulli log-probability is a cross-entropy, not a likelihood (a 4x too good 'NLL' on the digits)."""
    grey, binary, counts = torch.tensor([[0.0], [0.25], [1.0]]), torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [16.0]])
    params, net = DecoderParams(net="net"), nn.Linear(2, 1)
    with pytest.raises(ValueError, match=r"a Bernoulli decoder is a likelihood of binary x, .*binarize the data"):
        build_bernoulli_decoder(params, _Context(grey, net))
    build_bernoulli_decoder(params, _Context(binary, net))
    with pytest.raises(ValueError, match=r"a continuous Bernoulli decoder is a density on \[0, 1\], but the data's x reach \[0, 16\]"):
        build_continuous_bernoulli_decoder(params, _Context(counts, net))
    build_continuous_bernoulli_decoder(params, _Context(grey, net))
    build_bernoulli_decoder(params.model_copy(update={"event_shape": [1]}), _Context(grey, net))  # it models something else


def test_a_decoder_without_event_shape_on_data_without_x_is_told_to_set_one() -> None:
    context = _Context(torch.zeros(3, 5), nn.Linear(2, 5))
    context.data = Splits(TensorData({"a": torch.zeros(3, 5), "b": torch.zeros(3, 2, 2)}), TensorData({"a": torch.zeros(1, 5), "b": torch.zeros(1, 2, 2)}))
    with pytest.raises(ValueError, match=r"the data have no field x \(they have a \[5\], b \[2, 2\]\), .*set its event_shape"):
        build_bernoulli_decoder(DecoderParams(net="net"), context)
    build_bernoulli_decoder(DecoderParams(net="net", event_shape=[5]), context)


def test_a_predicted_scale_refuses_a_fixed_one_it_would_ignore() -> None:
    GaussianDecoderParams(net="n", scale="predicted", fixed_scale=1.0)  # the default, as a resolved spec writes it
    with pytest.raises(ValueError, match="with scale: predicted the network gives σ, so drop fixed_scale"):
        GaussianDecoderParams(net="n", scale="predicted", fixed_scale=0.1)


@pytest.mark.parametrize("sigma", [1e-3, 1.0, 30.0, 710.0, 1e6])
def test_a_learned_scale_starts_at_fixed_scale_however_large(sigma: float) -> None:
    """σ = softplus(ρ) + 10⁻⁴ starts at fixed_scale: log(expm1(σ)) overflowed from σ = 710 with a bare math range error."""
    decoder = GaussianDecoder(nn.Linear(2, 3), (3,), 1, "learned", sigma)
    scale = decoder(torch.zeros(4, 2)).base_dist.scale
    torch.testing.assert_close(scale, torch.full((4, 3), sigma + 1e-4), rtol=1e-6, atol=0.0)


def test_distributions_are_parameterised_in_float32_under_cpu_autocast() -> None:
    """CPU autocast ran the decoder's log-density sum in bfloat16: a VAE's ELBO of 64 pixels was 0.13 nats off."""
    torch.manual_seed(0)
    encoder = GaussianEncoder(nn.Linear(64, 8), 4)
    decoder = BernoulliDecoder(nn.Linear(4, 64), (64,))
    x = (torch.rand(32, 64) > 0.5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = encoder(x)
        z = q.rsample()
        px = decoder(z)
        log_lik = px.log_prob(x)
        logits = decoder.net(z)  # the network's own bfloat16 output, which the distribution is built from
    assert logits.dtype == torch.bfloat16, "the networks still run in half precision"
    assert q.base_dist.loc.dtype == torch.float32 and log_lik.dtype == torch.float32
    exact = torch.distributions.Bernoulli(logits=logits.double()).log_prob(x.double()).sum(-1)  # the same logits, summed in float64
    torch.testing.assert_close(log_lik.double(), exact, rtol=1e-6, atol=1e-4)
