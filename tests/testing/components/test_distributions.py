"""The kit passes every shipped prior, encoder and decoder, and catches broken distribution modules."""

from __future__ import annotations

import pytest
import torch
from component_kit_helpers import PRIORS, decoders, encoders, flow_prior
from torch import nn
from torch.distributions import Bernoulli, Categorical, Independent, Normal

from compose_gen.core import ContractError
from compose_gen.testing.components import check_decoder, check_encoder, check_prior

# --------------------------------------------------------------------------- the shipped components


def test_every_shipped_distribution_type_is_covered(catalogue):
    covered = {d["type"] for d in [*decoders(0).values(), *encoders(0).values(), *PRIORS.values()]}
    assert {t.name for t in catalogue.of_kind("prior", "encoder", "decoder", "flow")} <= covered


@pytest.mark.parametrize("conditional", [False, True], ids=["plain", "conditional"])
@pytest.mark.parametrize("name", list(decoders(0)))
def test_shipped_decoders_pass(build, inputs, name, conditional):
    decoder = build(decoders(2 if conditional else 0)[name])
    check_decoder(decoder, inputs["z"], inputs["c"] if conditional else None)


@pytest.mark.parametrize("conditional", [False, True], ids=["plain", "conditional"])
@pytest.mark.parametrize("name", ["gaussian", "flow"])
def test_shipped_encoders_pass(build, inputs, name, conditional):
    check_encoder(build(encoders(2 if conditional else 0)[name]), inputs["x"], inputs["c"] if conditional else None)


@pytest.mark.parametrize("name", list(PRIORS))
def test_shipped_priors_pass(build, name):
    dist = check_prior(build(PRIORS[name]))
    assert dist.event_shape == (3,)


def test_a_conditional_flow_prior_passes(build, inputs):
    check_prior(build(flow_prior(context=2)), inputs["c"])


def test_the_kit_leaves_the_module_as_it_was(build, inputs):
    decoder = build(decoders(2)["gaussian_learned"]).train()
    check_decoder(decoder, inputs["z"], inputs["c"])
    assert decoder.training and all(p.grad is None for p in decoder.parameters())



# --------------------------------------------------------------------------- broken distribution modules


class Decoder(nn.Module):
    """A correct decoder p(x|z, c) = N(W[z ‖ c], I); the doubles below break one property each."""

    def __init__(self, context: int = 0) -> None:
        super().__init__()
        self.net = nn.Linear(3 + context, 4)

    def loc(self, z, context):
        if context is not None:
            z = torch.cat([z, context.expand(*z.shape[:-1], -1)], -1)
        return self.net(z)

    def forward(self, z, context=None):
        return Independent(Normal(self.loc(z, context), 1.0), 1)


class FlattensSampleDims(Decoder):
    def forward(self, z, context=None):
        return super().forward(z.reshape(-1, 3), context)


class PoolsSampleDims(Decoder):
    """The right shapes, but every sample slice gets the mean over the sample dimension."""

    def forward(self, z, context=None):
        loc = self.loc(z, context)
        return Independent(Normal(loc.mean(0).expand_as(loc) if z.dim() > 2 else loc, 1.0), 1)


class PerCoordinate(Decoder):
    def forward(self, z, context=None):
        return Normal(self.loc(z, context), 1.0)


class IgnoresContext(Decoder):
    def forward(self, z, context=None):
        return super().forward(z)


class ConcatenatesContextAsIs(Decoder):
    def loc(self, z, context):
        return self.net(torch.cat([z, context], -1))


class CouplesExamples(Decoder):
    def forward(self, z, context=None):
        loc = self.loc(z, context)
        return Independent(Normal(loc - loc.mean(-2, keepdim=True), 1.0), 1)


class LeaksFromTheFirst(Decoder):
    """Every example's mean moves with example 0's: invisible when example 0 is checked alone."""

    def forward(self, z, context=None):
        loc = self.loc(z, context)
        return Independent(Normal(loc + 0.5 * loc[..., :1, :], 1.0), 1)


class FirstContextRowForAll(Decoder):
    def forward(self, z, context=None):
        return super().forward(z, context[..., :1, :].expand_as(context))


class UnusedParameter(Decoder):
    def __init__(self) -> None:
        super().__init__()
        self.forgotten = nn.Parameter(torch.zeros(4))


class NoGradientRsample(Independent):
    def rsample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return super().rsample(sample_shape)


class DetachedRsample(Decoder):
    def forward(self, z, context=None):
        return NoGradientRsample(Normal(self.loc(z, context), 1.0), 1)


class ScaleDetachedNormal(Normal):
    def rsample(self, sample_shape=torch.Size()):
        return self.loc + self.scale.detach() * torch.randn(self._extended_shape(sample_shape))


class DetachesTheScaleInRsample(Decoder):
    """Its reparameterised draws train the mean, never the learned scale."""

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(4))

    def forward(self, z, context=None):
        return Independent(ScaleDetachedNormal(self.loc(z, context), self.log_scale.exp()), 1)


class InfiniteLogProb(Decoder):
    def forward(self, z, context=None):
        return Independent(Normal(self.loc(z, context), torch.zeros(4), validate_args=False), 1, validate_args=False)


Z, C = torch.randn(5, 3), torch.randn(5, 2)


def test_a_correct_decoder_passes():
    check_decoder(Decoder(), Z)
    check_decoder(Decoder(context=2), Z, C)
    check_decoder(Decoder(), Z, sample_shape=(2, 3))


@pytest.mark.parametrize(
    ("decoder", "context", "message"),
    [
        (FlattensSampleDims(), None, r"FlattensSampleDims: forward returned an Independent of batch shape \(10,\) for an input of shape \(2, 5, 3\), "
         r"whose leading dimensions it should be .*; with sample dimensions \(2,\) prepended to its input, it must broadcast over them"),
        (PoolsSampleDims(), None, r"PoolsSampleDims: does not broadcast over prepended sample dimensions: log_prob at sample index \(0,\) .* differs "
         r"from the module applied to that slice alone; expected equal \(max error"),
        (PerCoordinate(), None, r"PerCoordinate: forward returned a Normal of batch shape \(5, 4\) for an input of shape \(5, 3\), so its log_prob is per coordinate"),
        (IgnoresContext(), C, r"IgnoresContext: ignores its context: log_prob of the same values is unchanged when the context changes \(rows rolled by one\)"),
        (ConcatenatesContextAsIs(context=2), C, r"ConcatenatesContextAsIs: forward\(z of shape \(2, 5, 3\), context of shape \(5, 2\)\) raised RuntimeError: .*; "
         r"with sample dimensions \(2,\) prepended to its input, it must broadcast over them and broadcast its context \(one row per example\) to them"),
        (CouplesExamples(), None, r"CouplesExamples: examples are not independent: example 0's log_prob alone differs"),
        (LeaksFromTheFirst(), None, r"LeaksFromTheFirst: examples are not independent: example 1's log_prob alone differs"),
        (FirstContextRowForAll(context=2), C, r"FirstContextRowForAll: examples are not independent: example 1's log_prob alone differs"),
        (UnusedParameter(), None, r"UnusedParameter: parameter 'forgotten' gets no gradient from log_prob"),
        (DetachedRsample(), None, r"DetachedRsample: has_rsample is True but rsample's draws carry no gradient"),
        (DetachesTheScaleInRsample(), None, r"DetachesTheScaleInRsample: parameter 'log_scale' gets no gradient from rsample's draws, though it shapes log_prob"),
        (InfiniteLogProb(), None, r"InfiniteLogProb: log_prob under the distribution \(its own sample draws\) has 15 non-finite values of 15"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None,
)
def test_a_broken_decoder_is_told_what_is_wrong(decoder, context, message):
    with pytest.raises(ContractError, match=message):
        check_decoder(decoder, Z, context)


def test_an_exception_in_the_plugin_is_chained():
    with pytest.raises(ContractError) as failure:
        check_decoder(ConcatenatesContextAsIs(context=2), Z, C)
    assert isinstance(failure.value.__cause__, RuntimeError)


def test_a_context_whose_rows_are_all_alike_needs_another_context():
    with pytest.raises(ValueError, match="every row of the context is the same; give rows that differ, or other_context"):
        check_decoder(Decoder(context=2), Z, torch.ones(5, 2))
    check_decoder(Decoder(context=2), Z, torch.ones(5, 2), other_context=torch.zeros(5, 2))


def test_an_encoder_is_checked_like_a_decoder():
    check_encoder(Decoder(), Z)
    with pytest.raises(ContractError, match=r"PerCoordinate: forward returned a Normal of batch shape \(5, 4\)"):
        check_encoder(PerCoordinate(), Z)


class Prior(nn.Module):
    """A correct prior N(μ, T²I) with graph methods; the doubles below break one property each."""

    graph_methods = ("sample", "rsample")

    def __init__(self) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(3))

    def forward(self, temperature: float = 1.0):
        return Independent(Normal(self.loc, temperature * torch.ones(3), validate_args=False), 1)  # a scale of 0 at T = 0

    def rsample(self, like, temperature: float = 1.0):
        return self(temperature).rsample((like if isinstance(like, int) else len(like),))

    def sample(self, like, temperature: float = 1.0):
        with torch.no_grad():
            return self.rsample(like, temperature)


class IgnoresTemperature(Prior):
    def forward(self, temperature: float = 1.0):
        return super().forward()


class SumsItsDraws(Prior):
    def sample(self, like, temperature: float = 1.0):
        return super().sample(like, temperature).sum(-1)


class ElementwisePrior(Prior):
    def forward(self, temperature: float = 1.0):
        return Normal(self.loc, temperature)


class StrayDimension(Prior):
    def forward(self, temperature: float = 1.0):
        return Independent(Normal(self.loc[None], temperature), 1)


class SampleIgnoresTemperature(Prior):
    def sample(self, like, temperature: float = 1.0):
        return super().sample(like)


class RsampleWithoutGradient(Prior):
    def rsample(self, like, temperature: float = 1.0):
        return self(temperature).sample((like if isinstance(like, int) else len(like),))


class SampleTakesNoTemperature(Prior):
    def sample(self, like):
        return super().sample(like)


class WidensWithTemperature(Prior):
    def forward(self, temperature: float = 1.0):
        return Independent(Normal(self.loc, torch.ones(3) / temperature), 1)


class NoModeAtTemperatureZero(Prior):
    def forward(self, temperature: float = 1.0):
        return Independent(Normal(self.loc, temperature * torch.ones(3)), 1)  # validated: a scale of 0 is refused


class ShiftsWithTemperature(Prior):
    def forward(self, temperature: float = 1.0):
        return Independent(Normal(self.loc + 2 * (1 - temperature), torch.ones(3), validate_args=False), 1)


class CoinsPrior(nn.Module):
    """A learned Bernoulli prior starting at p = 1/2, its logits divided by T: a coin's draws barely move with T."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(3))

    def forward(self, temperature: float = 1.0):
        return Independent(Bernoulli(logits=self.logits / max(temperature, 1e-6)), 1)


class UniformCodes(nn.Module):
    """A uniform prior over 4 codes, which has no temperature and says so."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(2, 4), requires_grad=False)

    def forward(self, temperature: float = 1.0):
        if temperature != 1:
            raise ValueError("uniform codes have no temperature")
        return Independent(Categorical(logits=self.logits), 1)


def test_a_discrete_prior_passes_whether_it_takes_a_temperature_or_refuses_one():
    """A zero-initialised Bernoulli prior was said to ignore its temperature (one seeded coin flip did not move); a
    prior without one failed though samplers may refuse a temperature."""
    check_prior(CoinsPrior())
    check_prior(UniformCodes())


class ListsAMethodItLacks(Prior):
    graph_methods = ("sample", "log_density")


def test_a_correct_prior_passes():
    check_prior(Prior())


@pytest.mark.parametrize(
    ("prior", "message"),
    [
        (IgnoresTemperature(), r"IgnoresTemperature: ignores its temperature: at temperature 0.5 the same draws as at 1 \(same seed\) and the same log_prob"),
        (WidensWithTemperature(), r"WidensWithTemperature: at temperature 0.5 its draws spread 4 times as much as at 1; expected .* σ·T"),
        (ShiftsWithTemperature(), r"ShiftsWithTemperature: its draws at temperature 0 are no mode: their mean log_prob at 1 is -\S+, below"),
        (NoModeAtTemperatureZero(), r"NoModeAtTemperatureZero: forward\(temperature=0.0\) raised ValueError: Expected parameter scale"),
        (SumsItsDraws(), r"SumsItsDraws: sample\(3, temperature=0.5\) returned a Tensor of shape \(3,\), expected shape \(3, 3\)"),
        (ElementwisePrior(), r"ElementwisePrior: forward returned a Normal of batch shape \(3,\) with no input, so its log_prob is per coordinate"),
        (StrayDimension(), r"StrayDimension: forward returned an Independent of batch shape \(1,\) with no input, .* it has an event already, "
         r"so its parameters carry a stray leading dimension"),
        (SampleIgnoresTemperature(), r"SampleIgnoresTemperature: sample\(3, temperature=0.5\) ignores its temperature: the same draws as at 1"),
        (RsampleWithoutGradient(), r"RsampleWithoutGradient: rsample's draws carry no gradient to the parameters"),
        (SampleTakesNoTemperature(), r"SampleTakesNoTemperature: sample\(3, temperature=0.5\) raised TypeError"),
        (ListsAMethodItLacks(), r"ListsAMethodItLacks: it lists 'log_density' in graph_methods, but has no such method"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None,
)
def test_a_broken_prior_is_told_what_is_wrong(prior, message):
    with pytest.raises(ContractError, match=message):
        check_prior(prior)



def test_the_kit_leaves_the_callers_random_streams_and_cuda_alone(build, monkeypatch) -> None:
    """Its seeded draws neither shift the caller's CPU stream nor queue a CUDA seed that would replace the caller's."""
    seeded = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)  # as on a GPU machine before CUDA is used
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeded.append)
    prior = build(PRIORS["standard_normal"])
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    seeded.clear()
    check_prior(prior)
    assert torch.equal(torch.rand(3), expected) and seeded == []
