"""Evaluation of latent-variable models: chunked importance sampling, NLL metric, collapse diagnostics, interpolation.

A conditional model is evaluated given each test batch's own condition, computed by the spec's graph.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence
from torch.nn.functional import one_hot

from compose_gen.compiler import GenerativeModel
from compose_gen.runtime import build
from compose_gen.spec import SpecError, load_spec

from compose_gen import EvalContext, Splits, TensorData, log_mean_exp
from compose_gen_plugins.distributions import StandardNormal
from compose_gen_plugins.latent.conditionals import BernoulliDecoder, GaussianDecoder, GaussianEncoder, MIN_SCALE
from compose_gen_plugins.latent.elbo import VAE
from compose_gen_plugins.latent.evaluation import ImportanceSampledNLL, PosteriorCollapse, unexplained_variance
from compose_gen_plugins.latent.grids import interpolate, slerp
from compose_gen import importance_sampled_log_likelihood
from compose_gen_plugins.latent.model import LatentLevel, ObjectiveParams, location
from compose_gen_plugins.latent.priors import GaussianMixturePrior

X_DIM, LATENT = 4, 3


@pytest.mark.parametrize("chunk", [1, 3, 7, 50])
def test_chunked_importance_sampling_equals_one_log_mean_exp(chunk: int) -> None:
    log_w = 30 * torch.randn(23, 5, dtype=torch.float64)  # widely spread: a naive mean of exp would overflow or vanish
    position = 0

    def next_draws(n: int) -> torch.Tensor:
        nonlocal position
        position += n
        return log_w[position - n : position]

    estimate = importance_sampled_log_likelihood(next_draws, 23, chunk)
    assert position == 23
    torch.testing.assert_close(estimate, log_mean_exp(log_w, 0))


def linear(in_features: int, out_features: int, weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def prior_encoder(active: int) -> GaussianEncoder:
    """q(z|x): the first ``active`` dimensions follow x, the others equal the prior N(0, 1) for every x."""
    weight = torch.zeros(2 * LATENT, X_DIM)
    weight[:active, :active] = torch.eye(active)
    bias = torch.cat([torch.zeros(LATENT), torch.full((LATENT,), math.log(math.expm1(1 - MIN_SCALE)))])
    return GaussianEncoder(linear(X_DIM, 2 * LATENT, weight, bias), LATENT)


def context(x: torch.Tensor, tmp_path: Path, **fields: torch.Tensor) -> EvalContext:
    data = TensorData({"x": x, **fields}, ladj_to_model=-2.5)
    return EvalContext(model=None, data=Splits(data, data), device=torch.device("cpu"), out_dir=tmp_path, batch_size=3)


@pytest.mark.parametrize("continuous", [False, True])
def test_importance_sampled_nll_is_exact_when_the_posterior_is_the_true_one(continuous: bool, tmp_path: Path) -> None:
    # A decoder that ignores z makes p(z|x) = p(z); with q = p every weight is p(x), for any number of samples.
    torch.manual_seed(0)
    logits = torch.randn(X_DIM)
    if continuous:
        decoder = GaussianDecoder(linear(LATENT, X_DIM, torch.zeros(X_DIM, LATENT), logits), (X_DIM,), 1, "fixed", 0.5)
        x = torch.randn(7, X_DIM)
        log_p = torch.distributions.Normal(logits, 0.5).log_prob(x).sum(-1)
    else:
        decoder = BernoulliDecoder(linear(LATENT, X_DIM, torch.zeros(X_DIM, LATENT), logits), (X_DIM,))
        x = (torch.rand(7, X_DIM) > 0.5).float()
        log_p = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
    model = VAE(prior_encoder(0), decoder, StandardNormal((LATENT,)), ObjectiveParams())
    ladj_x = torch.randn(7)
    result = ImportanceSampledNLL("m", model, samples=10, chunk=4, batch_size=3)(context(x, tmp_path, ladj_x=ladj_x))
    expected = -(log_p + (-2.5 + ladj_x if continuous else 0.0)).mean()
    assert result["test/m.nll_k10"] == pytest.approx(float(expected), abs=1e-5)
    assert result["test/m.bpd_k10"] == pytest.approx(float(expected) / (X_DIM * math.log(2)), abs=1e-5)


class OnlyEvidence(nn.Module):
    """A plugin's latent-variable loss that is no LatentVariableModel: ``evidence``, and ``log_likelihood`` as the core
    contract writes it, without the subclass's ``chunk``."""

    def __init__(self, model: VAE) -> None:
        super().__init__()
        self.model = model

    def evidence(self, x, k, exact_kl, context=None):
        return self.model.evidence(x, k, exact_kl, context)

    def log_likelihood(self, inputs, samples, ladj):
        raise AssertionError("the metric needs evidence alone")


def test_importance_sampled_nll_needs_only_evidence(tmp_path: Path) -> None:
    """The metric called log_likelihood with a chunk that the core contract's signature has not: a plugin's loss written
    to the README trained, then failed at the final evaluation with a TypeError."""
    decoder = GaussianDecoder(nn.Linear(LATENT, X_DIM), (X_DIM,), 1, "fixed", 0.5)
    model = VAE(prior_encoder(active=2), decoder, StandardNormal((LATENT,)), ObjectiveParams())
    x = torch.randn(7, X_DIM)
    theirs = ImportanceSampledNLL("m", OnlyEvidence(model), samples=10, chunk=4, batch_size=3)(context(x, tmp_path))
    assert theirs == ImportanceSampledNLL("m", model, samples=10, chunk=4, batch_size=3)(context(x, tmp_path))


def test_posterior_collapse_finds_the_dimensions_that_ignore_x(tmp_path: Path) -> None:
    decoder = BernoulliDecoder(nn.Linear(LATENT, X_DIM), (X_DIM,))
    model = VAE(prior_encoder(active=2), decoder, StandardNormal((LATENT,)), ObjectiveParams())
    x = torch.randn(50, X_DIM)
    result = PosteriorCollapse("m", model, threshold=0.01)(context(x, tmp_path))
    assert result["test/m.z.active_units"] == 2.0
    assert result["test/m.z.kl_dim02"] == pytest.approx(0.0, abs=1e-6)
    # KL(N(x_d, 1) ‖ N(0, 1)) = x_d²/2, averaged over the test set.
    assert result["test/m.z.kl_dim00"] == pytest.approx(float(x[:, 0].square().mean() / 2), rel=1e-4)
    assert result["test/m.z.kl"] == pytest.approx(sum(result[f"test/m.z.kl_dim0{d}"] for d in range(LATENT)))


def test_posterior_collapse_numbers_the_dimensions_of_a_spatial_latent_in_order(tmp_path: Path) -> None:
    """A (C, H, W) latent's KL per dimension, flattened: KL(N(μ, 1) ‖ N(0, 1)) = μ²/2 for each of its C·H·W units."""

    class SpatialLatent(nn.Module):
        x_value = "x"

        def levels(self, x: torch.Tensor, context: torch.Tensor | None = None) -> list[LatentLevel]:
            loc = x.reshape(-1, 2, 1, 2)
            prior = Independent(Normal(torch.zeros(2, 1, 2), torch.ones(2, 1, 2)), 3)
            return [LatentLevel("z", Independent(Normal(loc, torch.ones_like(loc)), 3), prior)]

    x = torch.randn(20, 4)
    result = PosteriorCollapse("m", SpatialLatent(), threshold=0.01)(context(x, tmp_path))
    for d in range(4):
        assert result[f"test/m.z.kl_dim0{d}"] == pytest.approx(float(x[:, d].square().mean() / 2), rel=1e-5)
    assert result["test/m.z.active_units"] == 4.0


@pytest.mark.parametrize("metric", [partial(ImportanceSampledNLL, samples=4, chunk=2, batch_size=3), partial(PosteriorCollapse, threshold=0.01)])
def test_latent_metrics_read_the_data_in_the_model_precision(metric: partial, tmp_path: Path) -> None:
    """A model made float64 (``run.model.double()``) is evaluated in float64, as its losses are."""
    decoder = GaussianDecoder(nn.Linear(LATENT, X_DIM), (X_DIM,), 1, "fixed", 0.5)
    model = VAE(prior_encoder(active=2), decoder, StandardNormal((LATENT,)), ObjectiveParams()).double()
    seen: list[torch.dtype] = []
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            layer.register_forward_pre_hook(lambda module, args: seen.extend(a.dtype for a in args))
    x = torch.randn(7, X_DIM)
    result = metric("m", model)(context(x, tmp_path))
    assert all(math.isfinite(value) for value in result.values())
    assert seen and set(seen) == {torch.float64}, f"the networks read {set(seen)}"
    if metric.func is PosteriorCollapse:  # KL(N(x_d, 1) ‖ N(0, 1)) = x_d²/2: exact to float64's precision, not float32's
        for d in range(2):
            assert result[f"test/m.z.kl_dim0{d}"] == pytest.approx(float(x[:, d].double().square().mean() / 2), rel=1e-12)


def test_a_lower_unit_that_moves_with_x_only_through_its_prior_is_not_active(tmp_path: Path) -> None:
    """q(z₁|x, z₂) = p(z₁|z₂): z₁'s posterior mean varies with x through z₂ alone, which tells nothing more of x (on
    hvae_digits, 14 of 16 such units with a KL of 1e-7 nats were counted active)."""
    from compose_gen_plugins.latent.hierarchical import HierarchicalVAE
    from compose_gen_plugins.networks import MLP

    torch.manual_seed(0)
    uninformed = linear(X_DIM, 2 * LATENT, torch.zeros(2 * LATENT, X_DIM), torch.cat([torch.zeros(LATENT), torch.full((LATENT,), 1e3)]))
    conditional_prior = GaussianEncoder(MLP(LATENT, 2 * LATENT, [8]), LATENT)
    decoder = BernoulliDecoder(nn.Linear(LATENT, X_DIM), (X_DIM,))
    model = HierarchicalVAE(prior_encoder(active=2), GaussianEncoder(uninformed, LATENT), conditional_prior, StandardNormal((LATENT,)), decoder, ObjectiveParams())
    x = 3 * torch.randn(50, X_DIM)
    with torch.no_grad():
        (_, bottom) = model.levels(x)
    assert (location(bottom.posterior).var(0) > 0.01).sum() >= 2, "z₁'s means do vary with x, through z₂"
    result = PosteriorCollapse("m", model, threshold=0.01)(context(x, tmp_path))
    assert result["test/m.z2.active_units"] == 2.0 and result["test/m.z1.active_units"] == 0.0
    assert result["test/m.z1.kl"] < 1e-4


@torch.no_grad()
def test_posterior_collapse_estimates_the_kl_to_a_mixture_prior_by_monte_carlo(tmp_path: Path) -> None:
    """A one-component mixture is N(μ, σ²) in disguise: the estimate ``kl_mc`` meets the closed form."""
    prior = GaussianMixturePrior(LATENT, components=1)
    with torch.no_grad():
        prior.loc.copy_(torch.tensor([[0.5, -1.0, 2.0]]))
        prior.log_scale.fill_(math.log(1.5))
    decoder = BernoulliDecoder(nn.Linear(LATENT, X_DIM), (X_DIM,))
    model = VAE(prior_encoder(active=2), decoder, prior, ObjectiveParams())
    x = torch.randn(60, X_DIM)
    result = PosteriorCollapse("m", model, threshold=0.01, kl_samples=400)(context(x, tmp_path))
    q = model.encoder(x)
    exact = kl_divergence(q, Independent(Normal(prior.loc[0], prior.log_scale[0].exp()), 1)).mean()
    assert "test/m.z.kl" not in result and result["test/m.z.active_units"] == 2.0
    assert result["test/m.z.kl_mc"] == pytest.approx(float(exact), abs=0.05)  # S·n = 24000 draws; the KL here is ≈ 2 nats


def test_spherical_interpolation_keeps_the_norm_and_moves_at_constant_angle() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 5, generator=g, dtype=torch.float64), torch.randn(2, 5, generator=g, dtype=torch.float64)
    b = b / b.norm(dim=-1, keepdim=True) * a.norm(dim=-1, keepdim=True)
    path = interpolate(a, b, 6, "spherical")
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(path.norm(dim=-1), a.norm(dim=-1).expand(6, 2))
    cosines = (path[1:] * path[:-1]).sum(-1) / path[1:].norm(dim=-1) / path[:-1].norm(dim=-1)
    torch.testing.assert_close(cosines, cosines[:1].expand_as(cosines))
    linear_path = interpolate(a, b, 5, "linear")
    torch.testing.assert_close(linear_path[2], (a + b) / 2)
    torch.testing.assert_close(slerp(a, a, torch.tensor([0.3], dtype=torch.float64))[0], a)  # zero angle: no NaN


def conditional_digits_vae() -> dict:
    """A conditional VAE on binarised digits: encoder and decoder read ``c = one_hot(y, 10)``."""
    net = {"type": "mlp", "hidden": [16], "context_features": 10}
    return {
        "name": "cvae",
        "seed": 0,
        "data": {"type": "digits", "binarize": "threshold", "shape": "flat", "test_fraction": 0.05},
        "graph": {"c": "one_hot(y, 10)"},
        "components": {
            "prior": {"type": "standard_normal", "shape": [2]},
            "encoder": {"type": "gaussian_encoder", "latent": 2, "net": {**net, "in_features": 64, "out_features": 4}},
            "decoder": {"type": "bernoulli_decoder", "net": {**net, "in_features": 2, "out_features": 64}},
        },
        "losses": {"cvae": {"type": "elbo", "encoder": "encoder", "decoder": "decoder", "prior": "prior", "context": "c"}},
        "sample": {"type": "latent_model", "model": "cvae", "classes": 10},
        "evaluate": {
            "metrics": [
                {"type": "importance_sampled_nll", "model": "cvae", "samples": 6, "chunk": 4, "batch_size": 32},
                {"type": "reconstruction_grid", "model": "cvae", "examples": 10},
                {"type": "interpolation_grid", "model": "cvae", "pairs": 3, "steps": 4},
            ]
        },
    }


@pytest.fixture(scope="module")
def conditional_model() -> tuple[GenerativeModel, Splits]:
    model, data = build(load_spec(conditional_digits_vae()), "cpu")
    with torch.no_grad():  # untrained, the decoder barely reads c: let the class move the pixels' logits
        model.component("decoder").net.net[0].weight[:, 2:].mul_(20)
    return model.eval(), data


def eval_context(model: GenerativeModel, data: Splits, out_dir: Path) -> EvalContext:
    return EvalContext(model=model, data=data, device=torch.device("cpu"), out_dir=out_dir, batch_size=32, seed=7)


@torch.no_grad()
def test_importance_sampled_nll_of_a_conditional_model_uses_each_batchs_condition(
    conditional_model: tuple[GenerativeModel, Splits], tmp_path: Path
) -> None:
    """The metric is −log p(x|c) with c = one_hot(y, 10) of each test example, at the same seeded draws."""
    model, data = conditional_model
    nll = model.metrics[0](eval_context(model, data, tmp_path))["test/cvae.nll_k6"]
    vae = model.losses["cvae"]
    test = data.test.fields

    def log_weights(x: torch.Tensor, c: torch.Tensor, draws: int) -> torch.Tensor:
        return vae.evidence(x, draws, exact_kl=False, context=c).log_weights

    def direct(labels: torch.Tensor) -> float:
        """The NLL (binary pixels: no change of variables) with batches of 32 conditioned on ``labels``."""
        torch.manual_seed(7)
        total = 0.0
        for start in range(0, len(labels), 32):
            x, c = test["x"][start : start + 32], one_hot(labels[start : start + 32], 10).float()
            total += float(importance_sampled_log_likelihood(partial(log_weights, x, c), 6, 4).double().sum())
        return -total / len(labels)

    assert nll == pytest.approx(direct(test["y"]), rel=1e-6)
    assert abs(nll - direct((test["y"] + 1) % 10)) > 0.1, "the wrong condition gives another NLL"


@torch.no_grad()
def test_picture_grids_of_a_conditional_model_decode_under_each_images_condition(
    conditional_model: tuple[GenerativeModel, Splits], tmp_path: Path
) -> None:
    """Reconstructions read each image's own condition; each interpolation row its first image's."""
    model, data = conditional_model
    seen = []
    handle = model.component("decoder").net.register_forward_hook(lambda module, args, out: seen.append(args[1]))
    reconstructions = model.metrics[1](eval_context(model, data, tmp_path))
    interpolations = model.metrics[2](eval_context(model, data, tmp_path))
    handle.remove()
    assert reconstructions == {"test/cvae.reconstruction_images": 10.0}
    assert interpolations == {"test/cvae.interpolation_images": 12.0}
    assert (tmp_path / "cvae_reconstructions.png").stat().st_size > 0
    assert (tmp_path / "cvae_interpolation_spherical.png").stat().st_size > 0
    y = data.test.fields["y"]
    torch.testing.assert_close(torch.cat(seen[:2]), one_hot(y[:10], 10).float())  # rows of 8: two decoder calls
    torch.testing.assert_close(seen[2], one_hot(y[0:6:2], 10).float().repeat_interleave(4, dim=0))


@torch.no_grad()
def test_a_short_last_row_of_the_reconstruction_grid_keeps_each_reconstruction_below_its_image(
    conditional_model: tuple[GenerativeModel, Splits], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10 examples in rows of 8: the last 2 images and their 2 reconstructions each fill a row, the rest blank."""
    import compose_gen_plugins.latent.grids as grids

    model, data = conditional_model
    saved = {}
    monkeypatch.setattr(grids, "save_grid", lambda images, path, nrow: saved.update(images=images, nrow=nrow))
    model.metrics[1](eval_context(model, data, tmp_path))
    images, nrow = saved["images"], saved["nrow"]
    assert nrow == 8 and images.shape == (32, 1, 8, 8)
    x, y = data.test.fields["x"][8:10], one_hot(data.test.fields["y"][8:10], 10).float()
    torch.testing.assert_close(images[16:18].flatten(1), data.test.to_display(x).flatten(1))  # third row: the images
    torch.testing.assert_close(images[24:26].flatten(1), data.test.to_display(model.losses["cvae"].reconstruct(x, y)).flatten(1))
    assert not images[18:24].any() and not images[26:].any()


def test_unexplained_variance_is_the_variance_or_the_pooled_within_class_variance() -> None:
    values = torch.randn(300, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(unexplained_variance(values, None), values.var(0))
    labels = torch.arange(300) % 4
    shifted = values + 10.0 * labels[:, None]  # the class moves every column
    within = sum(((shifted[labels == k] - shifted[labels == k].mean(0)) ** 2).sum(0) for k in range(4)) / (300 - 4)
    torch.testing.assert_close(unexplained_variance(shifted, one_hot(labels, 4).float()), within)


def test_unexplained_variance_is_refused_without_more_examples_than_the_fits_rank() -> None:
    """One example has no variance about its mean; three examples of three classes none about their class means."""
    with pytest.raises(ValueError, match=r"variance of 1 value\(s\) about their mean is undefined; it needs at least 2"):
        unexplained_variance(torch.tensor([[0.3, -2.0]]), None)
    with pytest.raises(ValueError, match=r"fit on \[1, condition\] of rank 3 is undefined; it needs at least 4"):
        unexplained_variance(torch.randn(3, 2), torch.eye(3))


def test_active_units_of_a_one_example_test_split_are_nan_with_a_warning_and_the_kl_stays(tmp_path: Path) -> None:
    model = VAE(prior_encoder(active=2), BernoulliDecoder(nn.Linear(LATENT, X_DIM), (X_DIM,)), StandardNormal((LATENT,)), ObjectiveParams())
    x = torch.randn(1, X_DIM)
    with pytest.warns(UserWarning, match=r"test/m.z.active_units is NaN: the variance of 1 value\(s\)"):
        result = PosteriorCollapse("m", model, threshold=0.01)(context(x, tmp_path))
    assert math.isnan(result["test/m.z.active_units"])
    assert result["test/m.z.kl_dim00"] == pytest.approx(float(x[0, 0].square() / 2), rel=1e-4)


@torch.no_grad()
def test_a_unit_that_moves_with_the_condition_alone_is_not_active(tmp_path: Path) -> None:
    """An encoder blind to x whose means follow c = one_hot(y): every unit varies over the test set, none is active."""
    model, data = build(load_spec(conditional_digits_vae() | {"evaluate": {"metrics": [{"type": "posterior_collapse", "model": "cvae"}]}}), "cpu")
    first = model.component("encoder").net.net[0]
    first.weight[:, :64] = 0  # the first layer reads [x ‖ c]: silence x
    first.weight[:, 64:].mul_(50)
    results = model.metrics[0](eval_context(model, data, tmp_path))
    means = model.losses["cvae"].encode(data.test.fields["x"], one_hot(data.test.fields["y"], 10).float())
    assert (means.var(0) > 0.01).all(), "the means do vary: with the condition"
    assert results["test/cvae.z.active_units"] == 0


MOONS_VAE = {
    "name": "moons_vae",
    "data": {"type": "moons", "n": 64},
    "components": {
        "prior": {"type": "standard_normal", "shape": [2]},
        "encoder": {"type": "gaussian_encoder", "latent": 2, "net": {"type": "mlp", "in_features": 2, "out_features": 4, "hidden": [8]}},
        "decoder": {"type": "gaussian_decoder", "net": {"type": "mlp", "in_features": 2, "out_features": 2, "hidden": [8]}},
    },
    "losses": {"vae": {"type": "elbo", "encoder": "encoder", "decoder": "decoder", "prior": "prior"}},
    "train": {"steps": 2, "batch_size": 16},
    "sample": {"type": "ancestral", "prior": "prior", "decoder": "decoder"},
}


@pytest.mark.parametrize(
    "metric",
    [{"type": "sample_grid"}, {"type": "reconstruction_grid", "model": "vae"}, {"type": "interpolation_grid", "model": "vae"}],
)
def test_picture_grids_on_data_that_are_not_images_are_refused_by_validate(metric: dict) -> None:
    """2-D points have no image_shape: the grid would fail only after training, so the build refuses it."""
    from compose_gen.spec import SpecError

    spec = load_spec(MOONS_VAE | {"evaluate": {"metrics": [metric]}})
    with pytest.raises(SpecError, match=rf"evaluate.metrics\[0\]: .*{metric['type']} draws an image grid, and the data are not images"):
        build(spec, "cpu")
    build(load_spec(MOONS_VAE | {"evaluate": {"metrics": [{"type": "test_losses"}]}}), "cpu")  # the spec is otherwise fine


@torch.no_grad()
def test_metrics_read_the_examples_the_loss_models_not_a_field_named_x(tmp_path: Path, monkeypatch) -> None:
    """A VAE of domain b (``x: b``) of two-domain data, which have no field x: every metric reads b, and bits/dim are per b."""
    spec = {
        "name": "vae_of_b",
        "data": {"type": "paired", "source": {"type": "digits", "shape": "flat", "binarize": "threshold"}, "mapping": "invert"},
        "components": {
            "prior": {"type": "standard_normal", "shape": [2]},
            "encoder": {"type": "gaussian_encoder", "latent": 2, "net": {"type": "mlp", "in_features": 64, "out_features": 4, "hidden": [8]}},
            "decoder": {"type": "bernoulli_decoder", "event_shape": [64], "net": {"type": "mlp", "in_features": 2, "out_features": 64, "hidden": [8]}},
        },
        "losses": {"vae": {"type": "elbo", "x": "b", "encoder": "encoder", "decoder": "decoder", "prior": "prior"}},
        "evaluate": {"metrics": [{"type": "importance_sampled_nll", "model": "vae", "samples": 3}, {"type": "posterior_collapse", "model": "vae"}]},
    }
    model, data = build(load_spec(spec), "cpu")
    vae, seen = model.losses["vae"], []
    for method in ("evidence", "levels"):
        original = getattr(vae, method)
        monkeypatch.setattr(vae, method, lambda x, *args, original=original, **kwargs: seen.append(x) or original(x, *args, **kwargs))
    results = {}
    for metric in model.metrics:
        seen.clear()
        results.update(metric(eval_context(model, data, tmp_path)))
        torch.testing.assert_close(torch.cat(seen), data.test.fields["b"])  # one call per test batch, in order
    assert "x" not in data.test.fields
    assert results["test/vae.bpd_k3"] == pytest.approx(results["test/vae.nll_k3"] / (64 * math.log(2)))


def test_only_a_field_of_the_data_carries_the_data_s_log_determinant(tmp_path: Path) -> None:
    """x: a field → ladj_to_model plus its per-example part; x: a graph value (here a sum of fields) → None, no data ladj."""
    from types import SimpleNamespace

    from compose_gen_plugins.latent.evaluation import batch_examples

    a, ladj_a = torch.randn(4, 3), torch.randn(4)
    ectx = context(a, tmp_path, a=a, ladj_a=ladj_a)
    ectx.model = SimpleNamespace(values=lambda batch, names: {"a2": batch["a"] * 2})
    batch = {"x": a, "a": a, "ladj_a": ladj_a}
    x, ladj = batch_examples(ectx, SimpleNamespace(x_value="a"), batch)
    assert x is a and torch.equal(ladj, -2.5 + ladj_a)
    x, ladj = batch_examples(ectx, SimpleNamespace(x_value="a2"), batch)
    assert torch.equal(x, 2 * a) and ladj is None


def test_a_sample_grid_temperature_below_zero_is_refused_when_the_spec_loads() -> None:
    """Not after training, when the evaluation reaches the grid."""
    spec = Path(__file__).resolve().parents[3] / "specs" / "vae_digits.yaml"
    grid = "evaluate.metrics=[{type: sample_grid, temperatures: [1.0, -0.5]}]"
    with pytest.raises(SpecError, match=r"evaluate\.metrics\[0\]\.temperatures\[1\]: Input should be greater than or equal to 0"):
        load_spec(spec, [grid])


@pytest.mark.parametrize(
    "metric, expected",
    [
        ({"type": "importance_sampled_nll", "model": "nll"}, r"type elbo, iwae, hybrid_vae_flow or hierarchical_vae; a flow_nll's test_losses give its NLL, exact, or for a flow that dequantizes"),
        ({"type": "posterior_collapse", "model": "nll"}, r"type elbo, iwae, hybrid_vae_flow or hierarchical_vae \(a plugin's loss qualifies by its method levels\(\)"),
    ],
)
def test_a_latent_metric_of_a_loss_without_latents_says_which_losses_it_takes(metric, expected) -> None:
    spec = {
        "name": "flow",
        "data": {"type": "moons", "n": 200},
        "components": {"flow": {"type": "flow", "base": {"type": "standard_normal", "shape": [2]}, "bijectors": [{"type": "affine", "shape": [2]}]}},
        "losses": {"nll": {"type": "flow_nll", "flow": "flow"}},
        "evaluate": {"metrics": [metric]},
    }
    with pytest.raises(SpecError, match=r"evaluate.metrics\[0\]: .*loss 'nll' \(FlowNLL\) is not a latent-variable model: name a loss of " + expected):
        build(load_spec(spec), "cpu")


def test_posterior_collapse_of_a_model_whose_conditional_prior_has_no_mean(tmp_path: Path) -> None:
    """A conditional flow prior p(z|c) has no closed-form mean to take the posterior's from: the regression on c stands
    in for it, rather than the metric raising NotImplementedError."""
    raw = conditional_digits_vae()
    raw["components"]["prior"] = {
        "type": "flow",
        "base": {"type": "standard_normal", "shape": [2]},
        "bijectors": [{"type": "affine_coupling", "shape": [2], "hidden": [8], "context_features": 10}],
    }
    raw["evaluate"] = {"metrics": [{"type": "posterior_collapse", "model": "cvae"}]}
    model, data = build(load_spec(raw), "cpu")
    with torch.no_grad():
        model.component("encoder").net.net[0].weight[:, 64:].mul_(50)  # the means follow c = one_hot(y) far more than x
    results = model.metrics[0](eval_context(model, data, tmp_path))
    x, c = data.test.fields["x"], one_hot(data.test.fields["y"], 10).float()
    vae = model.losses["cvae"]
    with torch.no_grad():
        means = vae.encode(x, c)
        expected = float((unexplained_variance(means, c) > 0.01).sum())
        assert expected != float((unexplained_variance(means, None) > 0.01).sum()), "the regression on c must matter here"
        assert results["test/cvae.z.active_units"] == expected
        # kl_mc estimates E_q[log q(z|x,c) − log p(z|c)] from 16 draws per example: compare with 4000 draws
        level = next(iter(vae.levels(x, context=c)))
        torch.manual_seed(0)
        z = level.posterior.sample((4000,))
        gap = (level.posterior.log_prob(z) - level.prior.log_prob(z)).double()
    standard_error = float(gap.std()) / math.sqrt(16 * len(x))
    assert abs(results["test/cvae.z.kl_mc"] - float(gap.mean())) < 5 * standard_error
