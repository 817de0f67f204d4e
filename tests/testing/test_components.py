"""The component kit passes every shipped prior, encoder, decoder, sampler, loss and metric, and catches broken ones."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal

import compose_gen as cg
from compose_gen import ClassConditions, EvalContext, Loss, Sampler, Splits, TensorData
from compose_gen.core import ContractError
from compose_gen.testing.components import (
    check_decoder,
    check_encoder,
    check_loss,
    check_metric,
    check_prior,
    check_sampler,
)

# --------------------------------------------------------------------------- the shipped components


class Inline:
    """A build context without data: ``{type: ...}`` references are built from the catalogue."""

    data = None
    sampler = None

    def __init__(self, catalogue: cg.Catalogue) -> None:
        self.catalogue = catalogue

    def component(self, ref: dict) -> nn.Module:
        params = dict(ref)
        kind = self.catalogue.get(params.pop("type"))
        return kind.build(kind.params.model_validate(params), self)

    def loss(self, name: str) -> Loss:
        raise AssertionError(f"no losses here ({name!r})")


def mlp(i: int, o: int, context: int = 0) -> dict:
    return {"type": "mlp", "in_features": i, "out_features": o, "hidden": [8], "context_features": context}


def decoders(c: int) -> dict[str, dict]:
    """Every shipped decoder type (some in several configurations): z of 3 features, x of 6 values (or 3x2x2)."""
    return {
        "bernoulli": {"type": "bernoulli_decoder", "net": mlp(3, 6, c), "event_shape": [6]},
        "continuous_bernoulli": {"type": "continuous_bernoulli_decoder", "net": mlp(3, 6, c), "event_shape": [6]},
        "gaussian_learned": {"type": "gaussian_decoder", "net": mlp(3, 6, c), "event_shape": [6]},
        "gaussian_predicted": {"type": "gaussian_decoder", "net": mlp(3, 12, c), "event_shape": [6], "scale": "predicted"},
        "gaussian_fixed": {"type": "gaussian_decoder", "net": mlp(3, 6, c), "event_shape": [6], "scale": "fixed"},
        "categorical": {"type": "categorical_decoder", "net": mlp(3, 24, c), "event_shape": [6], "bins": 4},
        "discretized_logistic": {"type": "discretized_logistic_decoder", "net": mlp(3, 36, c), "event_shape": [6], "bins": 8, "components": 2},
        "discretized_logistic_rgb": {
            "type": "discretized_logistic_decoder",
            "net": mlp(3, 80, c),
            "event_shape": [3, 2, 2],
            "bins": 8,
            "components": 2,
            "channel_coupling": True,
        },
    }


def encoders(c: int) -> dict[str, dict]:
    iaf = {"type": "iaf", "shape": [3], "hidden": [8], "context_features": 4}
    return {
        "gaussian": {"type": "gaussian_encoder", "net": mlp(6, 6, c), "latent": 3},
        "flow": {"type": "flow_encoder", "net": mlp(6, 10, c), "latent": 3, "context_features": 4, "bijectors": [iaf]},
    }


def flow_prior(context: int = 0) -> dict:
    coupling = {"type": "affine_coupling", "shape": [3], "hidden": [8], "context_features": context}
    return {"type": "flow", "base": {"type": "standard_normal", "shape": [3]}, "bijectors": [coupling, {"type": "actnorm", "shape": [3]}]}


PRIORS = {
    "standard_normal": {"type": "standard_normal", "shape": [3]},
    "diagonal_normal": {"type": "diagonal_normal", "shape": [3]},
    "gaussian_mixture": {"type": "gaussian_mixture", "latent": 3, "components": 4},
    "flow": flow_prior(),
}

@pytest.fixture(scope="module")
def build(catalogue):
    torch.manual_seed(0)
    return Inline(catalogue).component


@pytest.fixture(scope="module")
def inputs():
    generator = torch.Generator().manual_seed(0)
    return {"z": torch.randn(5, 3, generator=generator), "x": torch.rand(5, 6, generator=generator), "c": torch.randn(5, 2, generator=generator)}


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


def eight_gaussians(**sections) -> dict:
    return {"name": "kit", "data": {"type": "eight_gaussians", "n": 200}, "train": {"steps": 1, "batch_size": 32}, **sections}


@pytest.fixture(scope="module")
def cvae(catalogue):
    """A compiled conditional VAE: encoder q(z|x, c), decoder p(x|z, c), sampled by class."""
    spec = eight_gaussians(
        graph={"c": "one_hot(y, 8)"},
        components={
            "prior": {"type": "standard_normal", "shape": [3]},
            "encoder": {"type": "gaussian_encoder", "latent": 3, "net": mlp(2, 6, 8)},
            "decoder": {"type": "gaussian_decoder", "net": mlp(3, 2, 8)},
        },
        losses={"vae": {"type": "elbo", "encoder": "encoder", "decoder": "decoder", "prior": "prior", "context": "c"}},
        sample={"type": "latent_model", "model": "vae", "classes": 8},
        evaluate={"metrics": [{"type": "test_losses"}, {"type": "posterior_collapse", "model": "vae"}, {"type": "importance_sampled_nll", "model": "vae", "samples": 8}]},
    )
    return cg.build(cg.load_spec(spec, catalogue=catalogue), "cpu")


@pytest.fixture(scope="module")
def cgan(catalogue):
    """A compiled class-conditional WGAN-GP, sampled by class from raw labels."""
    spec = eight_gaussians(
        components={
            "noise": {"type": "standard_normal", "shape": [2]},
            "generator": {"type": "mlp_generator", "latent_dim": 2, "hidden": [8], "num_classes": 8},
            "critic": {"type": "mlp_critic", "hidden": [8], "num_classes": 8},
        },
        graph={"z": "noise.sample(x)", "fake": "generator(z, y)"},
        losses={
            "adv": {"type": "wasserstein", "critic": "critic", "real": "x", "fake": "fake", "labels": "y"},
            "gp": {"type": "gradient_penalty", "critic": "critic", "real": "x", "fake": "fake", "labels": "y"},
        },
        players={"critic": {"params": ["critic"], "terms": ["adv.critic", "gp.critic"]}, "generator": {"params": ["generator"], "terms": ["adv.generator"]}},
        sample={"type": "generator", "noise": "noise", "generator": "generator", "classes": 8, "condition": "y"},
        evaluate={"metrics": [{"type": "birthday_paradox", "s": 20, "batches": 5}]},  # mode_coverage imports matplotlib: 1 s
    )
    return cg.build(cg.load_spec(spec, catalogue=catalogue), "cpu")


@pytest.fixture(scope="module")
def flow(catalogue):
    spec = eight_gaussians(
        components={"flow": {"type": "flow", "base": {"type": "standard_normal", "shape": [2]}, "bijectors": [{"type": "affine_coupling", "shape": [2], "hidden": [8]}]}},
        losses={"nll": {"type": "flow_nll", "flow": "flow"}},
        sample={"type": "flow_sampler", "flow": "flow"},
        evaluate={"metrics": [{"type": "test_losses"}]},
    )
    return cg.build(cg.load_spec(spec, catalogue=catalogue), "cpu")


def test_a_compiled_conditional_vae_passes(cvae, tmp_path):
    model, data = cvae
    x, c = data.test.fields["x"][:5], torch.nn.functional.one_hot(data.test.fields["y"][:5], 8).float()
    check_encoder(model.component("encoder"), x, c)
    check_decoder(model.component("decoder"), torch.randn(5, 3), c)
    check_prior(model.component("prior"))
    assert check_sampler(model.sampler).shape == (5, 2)
    result = check_loss(model.losses["vae"], {"x": x, "context": c})
    assert {"loss", "kl"} <= set(result)
    ctx = EvalContext(model, data, torch.device("cpu"), tmp_path)
    losses, collapse, nll = (check_metric(m, ctx) for m in model.metrics)
    assert "test/vae.elbo" in losses and "test/vae.z.active_units" in collapse and any(k.startswith("test/vae.nll") for k in nll)


def test_a_compiled_conditional_gan_passes(cgan, tmp_path):
    model, data = cgan
    x, y = data.test.fields["x"][:6], data.test.fields["y"][:6]
    fake = model.component("generator")(torch.randn(6, 2), y)  # requires grad through the generator
    for loss in model.losses.values():
        check_loss(loss, {"real": x, "fake": fake, "labels": y})
    check_loss(model.losses["adv"], {"real": x, "fake": fake, "labels": y}, ["generator"])
    check_sampler(model.sampler, n=3)
    ctx = EvalContext(model, data, torch.device("cpu"), tmp_path)
    for metric in model.metrics:
        check_metric(metric, ctx)


def test_a_compiled_flow_passes(flow):
    model, data = flow
    check_prior(model.component("flow"))
    check_loss(model.losses["nll"], {"x": data.test.fields["x"][:6]})
    check_sampler(model.sampler)


@pytest.mark.parametrize("name", ["minimax", "non_saturating", "wasserstein", "hinge", "least_squares"])
def test_shipped_adversarial_losses_pass(build, name):
    generator = nn.Linear(2, 2)
    critic = {"type": "mlp_critic", "in_shape": [2], "hidden": [8]}
    check_loss(build({"type": name, "critic": critic, "fake": "fake"}), {"real": torch.randn(6, 2), "fake": generator(torch.randn(6, 2))})


@pytest.mark.parametrize("name", ["elbo", "iwae"])
def test_shipped_latent_losses_pass(build, inputs, name):
    loss = build({"type": name, "encoder": encoders(0)["gaussian"], "decoder": decoders(0)["bernoulli"], "prior": PRIORS["standard_normal"]})
    check_loss(loss, {"x": inputs["x"].round()})


def test_the_shipped_ancestral_sampler_passes_by_class(build):
    sampler = build({"type": "ancestral", "prior": PRIORS["standard_normal"], "decoder": decoders(4)["gaussian_learned"], "classes": 4, "condition": "c"})
    assert check_sampler(sampler, n=6).shape == (6, 6)


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
        (FlattensSampleDims(), None, r"FlattensSampleDims: the distribution for an input of shape \(2, 5, 3\) \(sample dimensions \(2,\) prepended\) "
         r"has batch shape \(10,\), expected \(2, 5\)"),
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
        return Independent(Normal(self.loc, temperature * torch.ones(3)), 1)

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


def test_a_correct_prior_passes():
    check_prior(Prior())


@pytest.mark.parametrize(
    ("prior", "message"),
    [
        (IgnoresTemperature(), r"IgnoresTemperature: ignores its temperature: draws at temperature 0.5 equal those at 1"),
        (SumsItsDraws(), r"SumsItsDraws: sample\(3, temperature=0.5\) returned a Tensor of shape \(3,\), expected shape \(3, 3\)"),
        (ElementwisePrior(), r"ElementwisePrior: forward returned a Normal of batch shape \(3,\) with no input, so its log_prob is per coordinate"),
        (StrayDimension(), r"StrayDimension: forward returned an Independent of batch shape \(1,\) with no input, .* it has an event already, "
         r"so its parameters carry a stray leading dimension"),
        (SampleIgnoresTemperature(), r"SampleIgnoresTemperature: sample\(3, temperature=0.5\) ignores its temperature: the same draws as at 1"),
        (RsampleWithoutGradient(), r"RsampleWithoutGradient: rsample's draws carry no gradient to the parameters"),
        (SampleTakesNoTemperature(), r"SampleTakesNoTemperature: sample\(3, temperature=0.5\) raised TypeError"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None,
)
def test_a_broken_prior_is_told_what_is_wrong(prior, message):
    with pytest.raises(ContractError, match=message):
        check_prior(prior)


# --------------------------------------------------------------------------- broken samplers


class Draws(Sampler):
    """A correct unconditional sampler: n draws of N(0, T²I) in two dimensions."""

    def sample(self, n, temperature=1.0, context=None):
        return temperature * torch.randn(n, 2)


class ByClass(Sampler):
    """A correct class-conditional sampler: example i at the one-hot mean of its class."""

    conditions = ClassConditions("c", 3)

    def sample(self, n, temperature=1.0, context=None):
        return context + temperature * torch.randn(n, 3)


class WrongCount(Draws):
    def sample(self, n, temperature=1.0, context=None):
        return super().sample(n + 1, temperature)


class Squeezes(Draws):
    def sample(self, n, temperature=1.0, context=None):
        return super().sample(n, temperature).squeeze()


class OneRoundOfClasses(ByClass):
    def sample(self, n, temperature=1.0, context=None):
        return torch.eye(3) + temperature * torch.randn(3, 3)


class IgnoresClasses(ByClass):
    def sample(self, n, temperature=1.0, context=None):
        return temperature * torch.randn(n, 3)


class NoTemperature(Sampler):
    def sample(self, n):
        return torch.randn(n, 2)


class TupleConditions(ByClass):
    conditions = ("c", 3)


class NaNs(Draws):
    def sample(self, n, temperature=1.0, context=None):
        return torch.full((n, 2), math.nan)


def test_correct_samplers_pass():
    assert check_sampler(Draws()).shape == (5, 2)
    assert check_sampler(ByClass(), n=4).shape == (4, 3)
    torch.testing.assert_close(check_sampler(ByClass(), n=4, temperature=0.0), torch.eye(3)[[0, 1, 2, 0]])


@pytest.mark.parametrize(
    ("sampler", "message"),
    [
        (WrongCount(), r"WrongCount: sample\(1\) returned a Tensor of shape \(2, 2\), not a tensor of 1 examples"),
        (Squeezes(), r"Squeezes: sample\(1\) returned a Tensor of shape \(2,\), not a tensor of 1 examples"),
        (OneRoundOfClasses(), r"OneRoundOfClasses: sample\(1\) returned a Tensor of shape \(3, 3\)"),
        (IgnoresClasses(), r"IgnoresClasses: ignores its context: the same draws \(same seed\) for other class labels"),
        (NoTemperature(), r"NoTemperature: sample\(1, temperature=1.0\) raised TypeError"),
        (TupleConditions(), r"TupleConditions: conditions is a tuple, not None or a compose_gen.ClassConditions"),
        (NaNs(), r"NaNs: sample\(1, temperature=1.0\) has 2 non-finite values of 2"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None,
)
def test_a_broken_sampler_is_told_what_is_wrong(sampler, message):
    with pytest.raises(ContractError, match=message):
        check_sampler(sampler)


def test_a_sampler_returning_a_round_of_classes_is_caught_at_a_count_unlike_the_class_count():
    class RoundOfClasses(OneRoundOfClasses):
        def sample(self, n, temperature=1.0, context=None):
            return context if n in (1, 5) else torch.eye(3)  # right for the counts 1 and n, not for classes + 1

    with pytest.raises(ContractError, match=r"sample\(4\) returned a Tensor of shape \(3, 3\), not a tensor of 4 examples"):
        check_sampler(RoundOfClasses())


# --------------------------------------------------------------------------- broken losses


class Squares(Loss):
    """A correct loss: the mean square of a linear map of x, with its mean as an extra metric."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(2, 2)

    def forward(self, inputs, terms):
        y = self.net(inputs["x"])
        return {"loss": y.square().mean(), "mean": y.mean().detach()}


class PythonFloat(Squares):
    def forward(self, inputs, terms):
        return {"loss": super().forward(inputs, terms)["loss"].item()}


class Detached(Squares):
    def forward(self, inputs, terms):
        return {"loss": torch.tensor(super().forward(inputs, terms)["loss"].item())}


class PerExample(Squares):
    def forward(self, inputs, terms):
        return {"loss": self.net(inputs["x"]).square().mean(-1)}


class NaNTerm(Squares):
    def forward(self, inputs, terms):
        return {"loss": super().forward(inputs, terms)["loss"] * math.nan}


class TermsAsString(Squares):
    terms = "loss"


class TwoSided(Loss):
    """A critic term on real and fake, a generator term said to need only fake."""

    terms = ("critic", "generator")
    term_inputs = {"generator": ("fake",)}

    def __init__(self) -> None:
        super().__init__()
        self.critic = nn.Linear(2, 1)

    def forward(self, inputs, terms):
        result = {}
        if "critic" in terms:
            result["critic"] = self.critic(inputs["fake"]).mean() - self.critic(inputs["real"]).mean()
        if "generator" in terms:
            result["generator"] = -self.critic(inputs["fake"]).mean()
        return result


class DetachesFakeForTheGenerator(TwoSided):
    """The generator term still reaches the critic's weights, so only grad_to shows that the generator gets nothing."""

    def forward(self, inputs, terms):
        result = super().forward(inputs, terms - {"generator"})
        if "generator" in terms:
            result["generator"] = -self.critic(inputs["fake"].detach()).mean()
        return result


class ReadsRealWhenThere(TwoSided):
    """Its generator term changes with an input term_inputs leaves out, without failing when it is absent."""

    def forward(self, inputs, terms):
        result = super().forward(inputs, terms)
        if "generator" in terms and "real" in inputs:
            result["generator"] = result["generator"] + self.critic(inputs["real"]).mean()
        return result


class LyingTermInputs(TwoSided):
    def forward(self, inputs, terms):
        result = super().forward(inputs, terms)
        if "generator" in terms:
            result["generator"] = result["generator"] + 0 * inputs["real"].sum()
        return result


X = torch.randn(6, 2)


def test_correct_losses_pass():
    assert set(check_loss(Squares(), {"x": X})) == {"loss", "mean"}
    check_loss(TwoSided(), {"real": X, "fake": X.roll(1, 0)})
    check_loss(TwoSided(), {"real": X, "fake": X}, terms=["generator"])


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        (PythonFloat(), r"PythonFloat: forward returned 'loss' as a float, not a scalar tensor \(wrap it: torch.tensor\(value\)\)"),
        (Detached(), r"Detached: term 'loss' carries no gradient although parameter 'net.weight' requires grad"),
        (PerExample(), r"PerExample: forward returned 'loss' as a Tensor of shape \(6,\), not a scalar tensor"),
        (NaNTerm(), r"NaNTerm: forward returned 'loss' = nan; expected a finite value"),
        (TermsAsString(), r"TermsAsString: `terms` must be a non-empty tuple of names such as \('loss',\), got 'loss'"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None,
)
def test_a_broken_loss_is_told_what_is_wrong(loss, message):
    with pytest.raises(ContractError, match=message):
        check_loss(loss, {"x": X})


def test_a_term_is_computed_from_just_its_term_inputs():
    with pytest.raises(ContractError, match=r"LyingTermInputs \(term 'generator' given only its term_inputs \['fake'\]\): .* raised KeyError: 'real'"):
        check_loss(LyingTermInputs(), {"real": X, "fake": X})


class Fixed(Loss):
    def forward(self, inputs, terms):
        return {"loss": inputs["x"].square().mean()}


class DetachesItsInput(Fixed):
    def forward(self, inputs, terms):
        return {"loss": inputs["x"].detach().square().mean()}


def test_grad_to_finds_a_generator_term_cut_off_from_the_generator():
    fake = X.roll(1, 0).clone().requires_grad_()
    check_loss(TwoSided(), {"real": X, "fake": fake}, grad_to={"generator": ["fake"], "critic": ["fake"]})
    check_loss(DetachesFakeForTheGenerator(), {"real": X, "fake": fake})  # every term has a gradient somewhere
    with pytest.raises(ContractError, match=r"DetachesFakeForTheGenerator: term 'generator' gets no gradient to input 'fake' \(detached\?\)"):
        check_loss(DetachesFakeForTheGenerator(), {"real": X, "fake": fake}, grad_to={"generator": ["fake"]})
    with pytest.raises(ValueError, match=r"grad_to names input 'real' for term 'generator', but it does not require grad"):
        check_loss(TwoSided(), {"real": X, "fake": fake}, grad_to={"generator": ["real"]})


def test_a_term_has_the_same_value_from_just_its_term_inputs():
    with pytest.raises(ContractError, match=r"ReadsRealWhenThere: term 'generator' given only its term_inputs \['fake'\] differs from its value given every input"):
        check_loss(ReadsRealWhenThere(), {"real": X, "fake": X.roll(1, 0)})


def test_a_loss_is_checked_on_inputs_that_carry_gradients():
    with pytest.raises(ValueError, match=r"Fixed: no parameter of the loss and no input requires grad, so no gradient can be checked"):
        check_loss(Fixed(), {"x": X})  # a green test that checked no gradient at all would mislead
    check_loss(Fixed(), {"x": X.clone().requires_grad_()})
    with pytest.raises(ContractError, match=r"DetachesItsInput: term 'loss' carries no gradient although input 'x' requires grad"):
        check_loss(DetachesItsInput(), {"x": X.clone().requires_grad_()})


def test_unknown_terms_are_a_usage_error():
    with pytest.raises(ValueError, match=r"Squares has no term 'critic'; its terms are \('loss',\)"):
        check_loss(Squares(), {"x": X}, terms=["critic"])


# --------------------------------------------------------------------------- broken metrics


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))


@pytest.fixture
def ectx(tmp_path):
    data = TensorData({"x": X})
    return EvalContext(Tiny().eval(), Splits(data, data), torch.device("cpu"), tmp_path)


def test_a_metric_must_return_finite_floats(ectx):
    assert check_metric(lambda ctx: {"count": 3, "mean": 0.5}, ectx) == {"count": 3.0, "mean": 0.5}
    with pytest.raises(ContractError, match=r"<lambda>: returned 'm' \(a Tensor of shape \(\)\), not floats \(a tensor's value is tensor.item\(\)\)"):
        check_metric(lambda ctx: {"m": torch.tensor(1.0)}, ectx)
    with pytest.raises(ContractError, match=r"returned a Tensor of shape \(2,\), not a dict of named floats"):
        check_metric(lambda ctx: torch.zeros(2), ectx)
    with pytest.raises(ContractError, match=r"returned non-finite ratio=nan; expected finite values \(or list the key in allow_nonfinite\)"):
        check_metric(lambda ctx: {"ratio": math.nan}, ectx)
    assert math.isnan(check_metric(lambda ctx: {"ratio": math.nan}, ectx, allow_nonfinite={"ratio"})["ratio"])


def test_a_metric_must_leave_the_model_as_it_was(ectx):
    def trains(ctx):
        with torch.no_grad():
            ctx.model.weight.add_(1)
        return {}

    def switches_to_training(ctx):
        ctx.model.train()
        return {}

    with pytest.raises(ContractError, match=r"trains: changed the model's 'weight'; expected a metric to leave the model as it was"):
        check_metric(trains, ectx)
    with pytest.raises(ContractError, match=r"switches_to_training: changed the model's training mode"):
        check_metric(switches_to_training, ectx)

    def freezes(ctx):
        ctx.model.requires_grad_(False)
        return {}

    def adds_a_buffer(ctx):
        ctx.model.register_buffer("seen", torch.zeros(()))
        return {}

    with pytest.raises(ContractError, match=r"freezes: changed which of the model's parameters require grad"):
        check_metric(freezes, ectx)
    with pytest.raises(ContractError, match=r"adds_a_buffer: changed the model's 'seen'"):
        check_metric(adds_a_buffer, ectx)


def test_a_metric_must_leave_the_data_as_it_was(tmp_path):
    ectx = EvalContext(Tiny().eval(), Splits(TensorData({"x": X.clone()}), TensorData({"x": X.clone()})), torch.device("cpu"), tmp_path)

    def normalises_in_place(ctx):
        ctx.test.fields["x"].sub_(ctx.test.fields["x"].mean(0))
        return {}

    with pytest.raises(ContractError, match=r"normalises_in_place: changed the test split's 'x' in place; expected a metric to leave the data"):
        check_metric(normalises_in_place, ectx)


def test_a_metric_that_raises_is_reported_with_its_cause(ectx):
    def broken(ctx):
        return {"x": 1 / 0}

    with pytest.raises(ContractError, match=r"broken: the metric raised ZeroDivisionError: division by zero") as failure:
        check_metric(broken, ectx)
    assert isinstance(failure.value.__cause__, ZeroDivisionError)


# --------------------------------------------------------------------------- the README's example


def test_the_readme_example_runs(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Testing your components") :]
    start = section.index("```python\n") + len("```python\n")
    monkeypatch.chdir(tmp_path)
    exec(compile(section[start : section.index("```\n", start)], "README.md", "exec"), {})
