"""The bounds of LatentVariableModel: ELBO with β and KL warm-up, IWAE, KL modes; priors; decoder shapes; the conditional VAE."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.distributions import Independent, Normal

from compose_gen import ClassConditions, SpecWarning, log_mean_exp
from compose_gen.runtime import build
from compose_gen.spec import SpecError, load_spec
from compose_gen_plugins.convnets import ConvEncoder, conv_trunk
from compose_gen_plugins.distributions import StandardNormal
from compose_gen_plugins.flows.autoregressive import AutoregressiveParams, build_maf
from compose_gen_plugins.flows.distribution import Flow
from compose_gen_plugins.latent import conditionals as c
from compose_gen_plugins.latent.discretized import Grid
from compose_gen_plugins.latent.elbo import VAE, VAEParams
from compose_gen_plugins.latent.iwae import IWAEParams
from compose_gen_plugins.latent.model import ModelSampler, ObjectiveParams
from compose_gen_plugins.latent.priors import GaussianMixturePrior
from compose_gen_plugins.networks import MLP

X_DIM, LATENT = 6, 3


def vae(prior: nn.Module | None = None, **objective: object) -> VAE:
    torch.manual_seed(0)
    encoder = c.GaussianEncoder(MLP(X_DIM, 2 * LATENT, [8]), LATENT)
    decoder = c.BernoulliDecoder(MLP(LATENT, X_DIM, [8]), (X_DIM,))
    return VAE(encoder, decoder, prior or StandardNormal((LATENT,)), ObjectiveParams(**objective))


def binary_batch(n: int = 5) -> torch.Tensor:
    return (torch.rand(n, X_DIM, generator=torch.Generator().manual_seed(1)) > 0.5).float()


def run(model: VAE, x: torch.Tensor, seed: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return model({"x": x}, frozenset({"loss"}))


def test_beta_weights_only_the_kl_in_the_loss() -> None:
    x = binary_batch()
    plain, weighted = run(vae(), x), run(vae(beta=0.25), x)
    torch.testing.assert_close(plain["elbo"], weighted["elbo"])  # the reported bound is unweighted
    torch.testing.assert_close(weighted["loss"], -(plain["reconstruction"] - 0.25 * plain["kl"]))
    torch.testing.assert_close(plain["loss"], -plain["elbo"])


def test_kl_warmup_ramps_linearly_and_survives_a_state_dict_round_trip() -> None:
    model, x = vae(beta=2.0, warmup_steps=4), binary_batch()
    weights = []
    for _ in range(6):
        out = run(model, x)
        weights.append(float(out["kl_weight"]))
        torch.testing.assert_close(out["loss"], -(out["reconstruction"] - out["kl_weight"] * out["kl"]))
        model.after_step(frozenset({"loss"}))
    assert weights == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.0])
    resumed = vae(beta=2.0, warmup_steps=4)
    resumed.load_state_dict(vae(beta=2.0, warmup_steps=4).state_dict() | {"optimizer_steps": model.optimizer_steps})
    assert float(run(resumed, x)["kl_weight"]) == 2.0


def test_iwae_loss_is_minus_the_log_mean_exp_of_the_importance_weights() -> None:
    model, x = vae(objective="iwae", samples=7), binary_batch()
    out = run(model, x)
    torch.manual_seed(3)
    q = model.encoder(x)
    z = q.rsample((7,))
    log_w = model.decoder(z).log_prob(x) + model.prior().log_prob(z) - q.log_prob(z)
    torch.testing.assert_close(out["loss"], -log_mean_exp(log_w, 0).mean())
    torch.testing.assert_close(out["elbo"], log_w.mean())
    assert out["iwae"] >= out["elbo"]  # Jensen, on the very same draws


def test_iwae_type_defaults_to_five_samples_and_rejects_elbo_weights() -> None:
    refs = {"encoder": "e", "decoder": "d", "prior": "p"}
    assert IWAEParams(**refs).samples == 5 and IWAEParams(**refs).objective == "iwae"
    with pytest.raises(ValidationError, match="beta and warmup_steps"):
        VAEParams(**refs, objective="iwae", beta=0.5)
    with pytest.raises(ValidationError, match="kl: analytic computes the ELBO's KL in closed form; the iwae objective has no KL term"):
        IWAEParams(**refs, kl="analytic")  # not "no closed form": a Gaussian pair has one


def test_the_iwae_objective_with_one_sample_is_warned_to_be_the_elbo() -> None:
    """IWAE_1 is the ELBO; elbo, hybrid_vae_flow and hierarchical_vae default to samples: 1."""
    with pytest.warns(SpecWarning, match="objective: iwae with samples: 1 trains the ELBO itself"):
        vae(objective="iwae")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vae(objective="iwae", samples=2)
        vae(samples=1)


def test_a_prior_of_another_size_than_the_posterior_is_named() -> None:
    with pytest.raises(ValueError, match=rf"q\(z\|x\) gives z of shape \({LATENT},\), but the prior p\(z\) has shape \({LATENT + 1},\)"):
        run(vae(prior=StandardNormal((LATENT + 1,))), binary_batch())


def test_kl_modes_with_a_mixture_prior() -> None:
    x = binary_batch()
    mixture = GaussianMixturePrior(LATENT, 4)
    out = run(vae(prior=mixture), x)  # auto: no closed form, so Monte Carlo
    assert torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="no closed form"):
        run(vae(prior=mixture, kl="analytic"), x)


def test_gaussian_mixture_prior_density_and_sampling() -> None:
    torch.manual_seed(0)
    prior = GaussianMixturePrior(LATENT, 3)
    z = torch.randn(4, 2, LATENT)
    components = Independent(Normal(prior.loc, prior.log_scale.exp()), 1)
    expected = torch.logsumexp(prior.logits.log_softmax(0) + components.log_prob(z.unsqueeze(-2)), -1)
    torch.testing.assert_close(prior().log_prob(z), expected)
    assert prior.sample(5).shape == (5, LATENT)
    torch.testing.assert_close(prior(temperature=0.5).component_distribution.stddev, 0.5 * prior.log_scale.exp())


@pytest.mark.parametrize("temperature", [0.0, 0.5, 2.0])
def test_model_sampler_decodes_prior_draws_scaled_by_the_temperature(temperature: float) -> None:
    """At temperature T a standard normal prior draws T·z for the z it draws at T = 1 on the same random stream
    (Kingma & Dhariwal 2018), so T = 0 decodes the prior's mode n times."""
    model = vae()
    torch.manual_seed(7)
    z = model.prior().sample((4,))
    expected = model.decoder(temperature * z).mean
    torch.manual_seed(7)
    x = ModelSampler(model, mean=True).sample(4, temperature=temperature)
    torch.testing.assert_close(x, expected)
    assert ((x > 0) & (x < 1)).all()


def _conv_decoder_net(channels: int) -> nn.Module:
    from compose_gen_plugins.convnets import ConvGeneratorParams, build_conv_generator

    class Ctx:
        data = None

    params = ConvGeneratorParams(latent_dim=LATENT, image_shape=[channels, 8, 8], base_channels=4, norm="none")
    return build_conv_generator(params, Ctx())


@pytest.mark.parametrize(
    "make, x",
    [
        (lambda: c.BernoulliDecoder(MLP(LATENT, 64, [8]), (64,)), torch.ones(2, 64)),
        (lambda: c.ContinuousBernoulliDecoder(MLP(LATENT, 64, [8]), (64,)), torch.full((2, 64), 0.3)),
        (lambda: c.GaussianDecoder(MLP(LATENT, 128, [8]), (64,), 1, "predicted", 1.0), torch.zeros(2, 64)),
        (lambda: c.CategoricalDecoder(MLP(LATENT, 17 * 64, [8]), (64,), 1, Grid(17)), torch.full((2, 64), 0.25)),
        (
            lambda: c.DiscretizedLogisticMixtureDecoder(MLP(LATENT, 15 * 64, [8]), (1, 8, 8), 1, Grid(17), 5),
            torch.full((2, 1, 8, 8), 0.5),
        ),
        (lambda: c.BernoulliDecoder(_conv_decoder_net(1), (1, 8, 8)), torch.ones(2, 1, 8, 8)),
        (
            lambda: c.DiscretizedLogisticMixtureDecoder(_conv_decoder_net(6), (1, 8, 8), 1, Grid(256), 2),
            torch.zeros(2, 1, 8, 8),
        ),
    ],
)
def test_decoders_broadcast_over_prepended_sample_dimensions(make, x) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    decoder = make()
    z = torch.randn(3, 2, LATENT)
    px = decoder(z)
    assert px.log_prob(x).shape == (3, 2)
    assert px.mean.shape == (3, 2, *x.shape[1:]) and px.sample().shape == (3, 2, *x.shape[1:])
    torch.testing.assert_close(px.log_prob(x)[1], decoder(z[1]).log_prob(x))


def test_conv_encoder_broadcasts_over_sample_dimensions() -> None:
    from compose_gen_plugins.convnets import ConvOptions

    torch.manual_seed(0)
    trunk, features = conv_trunk((1, 8, 8), ConvOptions(base_channels=4), "none")
    encoder = c.GaussianEncoder(ConvEncoder(trunk, features, 2 * LATENT, (1, 8, 8), False), LATENT)
    x = torch.rand(3, 2, 1, 8, 8)
    q = encoder(x)
    assert q.batch_shape == (3, 2) and q.event_shape == (LATENT,)
    torch.testing.assert_close(q.mean[2], encoder(x[2]).mean)
    assert torch.isfinite(q.log_prob(q.rsample())).all()


def test_autoencoder_loss_is_the_reconstruction_nll_of_the_deterministic_code() -> None:
    from compose_gen_plugins.latent.autoencoder import Autoencoder

    torch.manual_seed(0)
    encoder, decoder = MLP(X_DIM, LATENT, [8]), c.GaussianDecoder(MLP(LATENT, X_DIM, [8]), (X_DIM,), 1, "fixed", 1.0)
    model, x = Autoencoder(encoder, decoder), torch.randn(5, X_DIM)
    out = model({"x": x}, frozenset({"loss"}))
    mean = decoder.net(encoder(x))
    # −log N(x; m, I) = ½‖x − m‖² + (D/2) log 2π: the squared error, up to a constant.
    expected = 0.5 * (x - mean).square().sum(-1).mean() + 0.5 * X_DIM * torch.log(torch.tensor(2 * torch.pi))
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(model.reconstruct(x), mean)


CONTEXT = 2


def conditional_vae(prior: nn.Module | None = None) -> VAE:
    """q(z|x, c) and p(x|z, c): MLPs reading a context of ``CONTEXT`` features beside their input."""
    torch.manual_seed(0)
    encoder = c.GaussianEncoder(MLP(X_DIM, 2 * LATENT, [8], context_features=CONTEXT), LATENT)
    decoder = c.BernoulliDecoder(MLP(LATENT, X_DIM, [8], context_features=CONTEXT), (X_DIM,))
    return VAE(encoder, decoder, prior or StandardNormal((LATENT,)), ObjectiveParams(context="c"))


def contexts(n: int = 5, seed: int = 2) -> torch.Tensor:
    return torch.randn(n, CONTEXT, generator=torch.Generator().manual_seed(seed))


def test_a_conditional_vae_trains_the_elbo_given_the_context() -> None:
    """ELBO = E_q(z|x,c)[log p(x|z,c)] − KL(q(z|x,c) ‖ p(z)), on the same draw as the loss."""
    model, x, context = conditional_vae(), binary_batch(), contexts()
    assert model.context_value == "c"
    torch.manual_seed(3)
    out = model({"x": x, "context": context}, frozenset({"loss"}))
    torch.manual_seed(3)
    q = model.encoder(x, context)
    z = q.rsample((1,))
    log_likelihood = model.decoder(z, context).log_prob(x)
    kl = torch.distributions.kl_divergence(q, model.prior())
    torch.testing.assert_close(out["elbo"], (log_likelihood - kl).mean())
    torch.manual_seed(3)
    other = model({"x": x, "context": context + 1}, frozenset({"loss"}))
    assert not torch.allclose(out["elbo"], other["elbo"]), "another context gives another bound"
    with pytest.raises(ValueError, match="needs a context"):
        run(model, x)


def test_a_conditional_vae_samples_given_the_context() -> None:
    model, context = conditional_vae(), contexts(4)
    seen = []
    handle = model.decoder.net.register_forward_hook(lambda module, args, out: seen.append(args))
    x = model.sample(4, temperature=0.5, context=context)
    sampled = ModelSampler(model, mean=True, conditions=ClassConditions("c", 4)).sample(4, 0.5, context)
    handle.remove()
    assert x.shape == sampled.shape == (4, X_DIM)
    assert len(seen) == 2 and all(args[0].shape == (4, LATENT) and args[1] is context for args in seen)


@torch.no_grad()
def test_a_conditional_flow_prior_makes_the_kl_estimate_use_p_of_z_given_c() -> None:
    """With a MAF prior reading c, the Monte Carlo KL is log q(z|x,c) − log p(z|c) at the same draws."""
    torch.manual_seed(1)
    maf = build_maf(AutoregressiveParams(shape=[LATENT], hidden=[8], context_features=CONTEXT), None)
    maf.made.net[-1].weight.normal_()  # the output layer starts at zero: the identity, which would ignore c
    prior = Flow(StandardNormal((LATENT,)), maf)
    model, x, context = conditional_vae(prior), binary_batch(), contexts()
    torch.manual_seed(4)
    evidence = model.evidence(x, 3, exact_kl=True, context=context)  # no closed form: Monte Carlo
    assert not evidence.exact_kl and evidence.kl.shape == (3, 5)
    torch.manual_seed(4)
    q = model.encoder(x, context)
    z = q.rsample((3,))
    torch.testing.assert_close(evidence.kl, q.log_prob(z) - prior.log_prob(z, context))
    assert not torch.allclose(evidence.kl, q.log_prob(z) - prior.log_prob(z, context + 1)), "p(z|c) depends on c"
    torch.testing.assert_close(model.levels(x, context)[0].prior.log_prob(z), prior.log_prob(z, context))
    assert model.sample(5, context=context).shape == (5, X_DIM)


def digits_vae(loss: dict, sample: dict) -> dict:
    net = {"type": "mlp", "hidden": [8]}
    return {
        "name": "cvae",
        "data": {"type": "digits", "binarize": "threshold", "shape": "flat"},
        "graph": {"c": "one_hot(y, 10)"},
        "components": {
            "prior": {"type": "standard_normal", "shape": [2]},
            "encoder": {"type": "gaussian_encoder", "latent": 2, "net": {**net, "in_features": 64, "out_features": 4, **loss.pop("encoder", {})}},
            "decoder": {"type": "bernoulli_decoder", "net": {**net, "in_features": 2, "out_features": 64, **loss.pop("decoder", {})}},
        },
        "losses": {"vae": {"type": "elbo", "encoder": "encoder", "decoder": "decoder", "prior": "prior", **loss}},
        "sample": {"type": "latent_model", "model": "vae", **sample},
    }


CONDITIONAL = {"context": "c", "encoder": {"context_features": 10}, "decoder": {"context_features": 10}}


def test_a_conditional_vae_spec_samples_by_class() -> None:
    model, _ = build(load_spec(digits_vae(dict(CONDITIONAL), {"classes": 10})), "cpu")
    seen = []
    handle = model.component("decoder").net.register_forward_hook(lambda module, args, out: seen.append(args))
    with torch.no_grad():
        x = model.sample(12)
    handle.remove()
    assert x.shape == (12, 64) and model.conditions == ClassConditions("c", 10)
    assert torch.equal(seen[-1][1], torch.nn.functional.one_hot(torch.arange(12) % 10, 10).float())


@pytest.mark.parametrize(
    ("loss", "sample", "message"),
    [
        (CONDITIONAL, {}, "loss 'vae' is conditioned on 'c': set classes to sample by class"),
        ({}, {"classes": 10}, "loss 'vae' is not conditional"),
        (
            {"context": "c", "encoder": {"context_features": 10}, "conditioned": ["encoder"]},
            {"classes": 10},
            r"loss 'vae' reads its context only in encoder \(its q\), so its samples do not depend on the class",
        ),
    ],
)
def test_latent_model_sampler_classes_must_match_the_loss(loss: dict, sample: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message) as error:
        build(load_spec(digits_vae(dict(loss), sample)), "cpu")
    assert error.value.problems[0].path[0] == "sample"


def test_conditioned_is_checked_where_it_is_written() -> None:
    """A misspelt part is refused by the spec itself (validate --static), at the field, with the nearest name."""
    raw = digits_vae(dict(CONDITIONAL, conditioned=["decoder", "priro"]), {"classes": 10})
    with pytest.raises(SpecError, match=r"conditioned names 'priro'; did you mean 'prior'\? \(this model's parts are encoder, decoder, prior\)") as error:
        load_spec(raw)
    assert error.value.problems[0].path == ("losses", "vae", "conditioned")
    raw["losses"]["vae"].update(type="hybrid_vae_flow", conditioned=["bijector"], bijectors=[{"type": "reverse", "shape": [64]}])
    with pytest.raises(SpecError, match=r"did you mean 'bijectors'\?"):
        load_spec(raw)


@pytest.mark.parametrize("scale, warned", [("learned", True), ("predicted", True), ("fixed", False)])
@pytest.mark.parametrize("table, caveat", [
    ("continuous", "1 feature(s) are constant in the train split (flat index 2)"),
    ("grid", "the data take only 7 distinct values (0..6)"),
])
def test_a_gaussian_decoder_whose_sigma_can_shrink_onto_some_values_is_warned_about(tmp_path, scale: str, warned: bool, table: str, caveat: str) -> None:
    """On a constant feature, or data that take a few values, a learned σ can shrink toward 0 (Theis et al. 2016)."""
    noise = torch.rand(60, 2, generator=torch.Generator().manual_seed(0)).tolist()
    cells = [(f"{u:.6f}", f"{v:.6f}", "3") if table == "continuous" else (str(i % 7), str(i % 5), "3") for i, (u, v) in enumerate(noise)]
    rows = ["a,b,c"] + [",".join(row) for row in cells]  # column c never changes
    (tmp_path / "t.csv").write_text("\n".join(rows))
    out = 6 if scale == "predicted" else 3
    spec = {
        "name": "vae_table",
        "data": {"type": "csv", "path": str(tmp_path / "t.csv")},
        "components": {
            "prior": {"type": "standard_normal", "shape": [2]},
            "encoder": {"type": "gaussian_encoder", "latent": 2, "net": {"type": "mlp", "in_features": 3, "out_features": 4, "hidden": [8]}},
            "decoder": {"type": "gaussian_decoder", "scale": scale, "net": {"type": "mlp", "in_features": 2, "out_features": out, "hidden": [8]}},
        },
        "losses": {"vae": {"type": "elbo", "encoder": "encoder", "decoder": "decoder", "prior": "prior"}},
        "train": {"batch_size": 16},
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build(load_spec(spec), "cpu")
    said = [str(w.message) for w in caught if issubclass(w.category, SpecWarning)]
    expected = f"{caveat}: the decoder's {scale} σ there can shrink toward 0"
    assert [expected in m for m in said] == ([True] if warned else [])


@pytest.mark.parametrize("loss, data, advice", [
    ("autoencoder", {"type": "digits", "shape": "flat"}, "dequantize them (the dataset's `transforms: [{type: dequantize, levels: L}]`"),
    ("elbo", {"type": "digits", "shape": "flat", "transforms": ["binarize"]}, "the data are binary: use bernoulli_decoder"),
])
def test_the_learned_sigma_warning_reaches_every_loss_with_a_decoder_and_fits_the_data(loss: str, data: dict, advice: str) -> None:
    """The 17-level digits for the autoencoder, whose loss then falls below zero; binarized digits: a Bernoulli decoder."""
    parts = {
        "encoder": {"type": "mlp", "in_features": 64, "out_features": 2, "hidden": [8]} if loss == "autoencoder" else
        {"type": "gaussian_encoder", "latent": 2, "net": {"type": "mlp", "in_features": 64, "out_features": 4, "hidden": [8]}},
        "decoder": {"type": "gaussian_decoder", "scale": "learned", "net": {"type": "mlp", "in_features": 2, "out_features": 64, "hidden": [8]}},
    }
    if loss == "elbo":
        parts["prior"] = {"type": "standard_normal", "shape": [2]}
    spec = {"name": "sigma", "data": data, "components": parts, "losses": {"m": {"type": loss, **{k: k for k in parts}}}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build(load_spec(spec), "cpu")
    said = [str(w.message) for w in caught if issubclass(w.category, SpecWarning)]
    assert len(said) == 1 and "the decoder's learned σ there can shrink toward 0" in said[0] and advice in said[0], said


@pytest.mark.parametrize("transforms, advice", [
    (["binarize"], "the data are binary: use bernoulli_decoder"),
    ([], "dequantize them"),
    ([{"type": "dequantize", "levels": 17}], None),  # continuous values in (0, 1): the density is bounded there
])
def test_a_continuous_bernoulli_decoder_on_values_at_0_and_1_is_warned_about(transforms: list, advice: str | None) -> None:
    """Its density at 0 and 1 grows without bound as λ nears them: on binarized digits a tester's NLL fell to −120 nats."""
    data = {"type": "digits", "shape": "flat", "scale": False, "transforms": [*transforms, {"type": "scale", "a": 1 / 17}]}
    if transforms == ["binarize"]:
        data = {"type": "digits", "shape": "flat", "transforms": ["binarize"]}
    parts = {
        "encoder": {"type": "gaussian_encoder", "latent": 2, "net": {"type": "mlp", "in_features": 64, "out_features": 4, "hidden": [8]}},
        "decoder": {"type": "continuous_bernoulli_decoder", "net": {"type": "mlp", "in_features": 2, "out_features": 64, "hidden": [8]}},
        "prior": {"type": "standard_normal", "shape": [2]},
    }
    spec = {"name": "cb", "data": data, "components": parts, "losses": {"m": {"type": "elbo", **{k: k for k in parts}}}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build(load_spec(spec), "cpu")
    said = [str(w.message) for w in caught if issubclass(w.category, SpecWarning)]
    if advice is None:
        assert said == []
    else:
        assert len(said) == 1 and "the continuous Bernoulli's density at 0 and 1 grows without bound" in said[0] and advice in said[0], said


def _gaussian_vae_spec(transforms: list, **loss: object) -> dict:
    """A VAE with a fixed-σ Gaussian decoder (a density) on the digits scaled to [0, 1] and then ``transforms``."""
    return {
        "name": "gaussian_vae",
        "data": {"type": "digits", "shape": "flat", "transforms": transforms},
        "components": {
            "prior": {"type": "standard_normal", "shape": [4]},
            "encoder": {"type": "gaussian_encoder", "latent": 4, "net": {"type": "mlp", "in_features": 64, "out_features": 8, "hidden": [16]}},
            "decoder": {"type": "gaussian_decoder", "net": {"type": "mlp", "in_features": 4, "out_features": 64, "hidden": [16]}},
        },
        "losses": {"vae": {"type": "elbo", "encoder": "encoder", "decoder": "decoder", "prior": "prior", **loss}},
    }


@torch.no_grad()
def test_a_densitys_bounds_are_counted_in_data_space_as_the_importance_sampled_nll_is() -> None:
    """log p_data(u) = log p(x) + log|det ∂x/∂u|: the dataset's ladj (here −64 log 16, the digits' scaling, plus the
    logit's per example) enters the logged elbo, reconstruction and loss, and no other term."""
    model, data = build(load_spec(_gaussian_vae_spec([{"type": "logit"}], ladj="ladj_x")), "cpu")
    vae = model.losses["vae"]
    batch = data.test.batch(slice(0, 8))
    ladj = data.test.ladj_to_model + batch["ladj_x"]
    assert data.test.ladj_to_model == pytest.approx(-64 * math.log(16), rel=1e-6)
    torch.manual_seed(0)
    logs = vae({"x": batch["x"], "ladj": batch["ladj_x"]}, frozenset({"loss"}))
    torch.manual_seed(0)
    evidence = vae.evidence(batch["x"], 1, exact_kl=True)
    torch.testing.assert_close(logs["reconstruction"], (evidence.log_likelihood + ladj).mean())
    torch.testing.assert_close(logs["elbo"], (evidence.log_likelihood + ladj).mean() - evidence.kl.mean())
    torch.testing.assert_close(logs["loss"], -logs["elbo"])
    torch.testing.assert_close(logs["kl"], evidence.kl.mean())
    with pytest.raises(SpecError, match=r"losses.vae: .* per-example log-determinant; set `ladj: ladj_x` so that the likelihood is counted in data space"):
        build(load_spec(_gaussian_vae_spec([{"type": "logit"}])), "cpu")


@pytest.mark.parametrize(
    "transforms, loss, has",
    [
        ([{"type": "logit"}], {"ladj": "y"}, "the field 'ladj_x'"),  # a label added to log p(x|z) trained silently
        ([], {"ladj": "x"}, "none: no transform of it has one"),
    ],
)
def test_ladj_must_be_the_log_determinant_of_the_models_x(transforms: list, loss: dict, has: str) -> None:
    spec = _gaussian_vae_spec(transforms, **loss)
    with pytest.raises(SpecError, match=rf"losses.vae: .*ladj: '{loss['ladj']}', but ladj is the per-example log-determinant of x = 'x', which has {has}"):
        build(load_spec(spec), "cpu")


def test_ladj_of_a_graph_value_is_refused_as_it_has_none() -> None:
    """The loss added the data's per-example part but not its constant to a value the data's log-determinant never described."""
    spec = _gaussian_vae_spec([{"type": "logit"}], ladj="ladj_x", x="h")
    spec["components"]["net"] = {"type": "mlp", "in_features": 64, "out_features": 64, "hidden": [8]}
    spec["graph"] = {"h": "net(x)"}
    with pytest.raises(SpecError, match=r"ladj: 'ladj_x', but ladj is the per-example log-determinant of x = 'h', which has none: a graph value"):
        build(load_spec(spec), "cpu")
