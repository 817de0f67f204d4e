"""The kit passes the components, samplers, losses and metrics of compiled models."""

from __future__ import annotations

import pytest
import torch
from component_kit_helpers import mlp

import compose_gen as cg
from compose_gen import EvalContext
from compose_gen.testing.components import (
    check_decoder,
    check_encoder,
    check_loss,
    check_metric,
    check_prior,
    check_sampler,
)


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

