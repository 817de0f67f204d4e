"""Samplers: the truncation trick draws a truncated normal (redrawn, not clamped); sampling by class.

A class-conditional sampler's example i is drawn for class i mod K, with the
condition the spec's graph makes from those labels, so sampling encodes a class
exactly as training did; and the conditions must be computable from labels alone.
"""

from __future__ import annotations

import math

import numpy
import pytest
import torch
from torch import nn

from compose_gen.compiler import compile_spec
from compose_gen.compiler.build import build_data
from compose_gen.compiler.dry_run import dry_run
from compose_gen.runtime import build
from compose_gen.spec import SpecError, load_spec
from compose_gen_plugins.distributions import StandardNormal
from compose_gen_plugins.samplers import GeneratorSampler


def truncated_normal_std(bound: float) -> float:
    """Standard deviation of N(0, 1) truncated to [-b, b]: sqrt(1 - 2 b φ(b) / (2Φ(b) - 1))."""
    density = math.exp(-bound**2 / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(bound / math.sqrt(2))
    return math.sqrt(1 - 2 * bound * density / mass)


def test_truncation_redraws_coordinates_beyond_the_bound() -> None:
    sampler = GeneratorSampler(StandardNormal((2,)), nn.Identity(), truncation=1.0, conditions=None)
    torch.manual_seed(0)
    z = sampler.sample(20_000)
    assert z.abs().max() <= 1.0
    assert (z.abs() > 0.999).float().mean() < 0.002, "clamping would pile 32% of the draws onto ±1"
    assert abs(z.std().item() - truncated_normal_std(1.0)) < 0.01  # 0.5396; the untruncated std is 1
    hot = sampler.sample(20_000, temperature=0.5)
    assert hot.abs().max() <= 0.5 and abs(hot.std().item() - 0.5 * truncated_normal_std(1.0)) < 0.005


def recorded_inputs(model, component: str, n: int) -> tuple[torch.Tensor, ...]:
    """The inputs ``component`` is called with while the compiled model draws ``n`` samples."""
    seen = []
    handle = model.component(component).register_forward_hook(lambda module, args, out: seen.append(args))
    with torch.no_grad():
        x = model.sample(n)
    handle.remove()
    assert x.shape == (n, 64)
    return seen[-1]


def conditional_gan(generator: dict, sample: dict, graph: dict | None = None) -> dict:
    return {
        "name": "conditional",
        "data": {"type": "digits", "shape": "flat"},
        "components": {
            "noise": {"type": "standard_normal", "shape": [4]},
            "generator": generator,
            "critic": {"type": "mlp_critic", "num_classes": 10, "hidden": [8]},
        },
        "graph": {"z": "noise.sample(x)", **(graph or {})},
        "losses": {"adv": {"type": "non_saturating", "critic": "critic", "real": "x", "fake": "fake", "labels": "y"}},
        "players": GAME,
        "sample": {"type": "generator", "noise": "noise", "generator": "generator", **sample},
    }


#: A critic and a generator player for the loss ``adv``.
GAME = {"critic": {"params": ["critic"], "terms": ["adv.critic"]}, "generator": {"params": ["generator"], "terms": ["adv.generator"]}}


def test_a_conditional_generator_gets_labels_cycling_through_the_classes() -> None:
    spec = conditional_gan(
        {"type": "mlp_generator", "latent_dim": 4, "num_classes": 10, "hidden": [8]}, {"classes": 4}, {"fake": "generator(z, y)"}
    )
    model, _ = build(load_spec(spec), "cpu")
    z, labels = recorded_inputs(model, "generator", 10)
    assert z.shape == (10, 4) and labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


def test_a_sampler_conditions_on_the_graph_value_made_from_the_labels() -> None:
    """``condition: c`` with ``c: one_hot(y, 10)``: the generator receives one-hot rows of the cycling labels."""
    spec = conditional_gan(
        {"type": "mlp_generator", "latent_dim": 4, "context_features": 10, "hidden": [8]},
        {"classes": 10, "condition": "c"},
        {"c": "one_hot(y, 10)", "fake": "generator(z, c)"},
    )
    model, _ = build(load_spec(spec), "cpu")
    _, context = recorded_inputs(model, "generator", 12)
    assert torch.equal(context, torch.nn.functional.one_hot(torch.arange(12) % 10, 10).float())


@pytest.mark.parametrize(
    ("graph", "sample", "message"),
    [
        ({"h": "one_hot(y, 10)", "c": "cat(x, h)"}, {"classes": 10, "condition": "c"}, "computed from x, not from the labels y alone"),
        ({}, {"condition": "y"}, "set classes too"),
    ],
)
def test_a_condition_the_sampler_cannot_make_is_refused(graph: dict, sample: dict, message: str) -> None:
    generator = {"type": "mlp_generator", "latent_dim": 4, "hidden": [8], "context_features": 74}
    spec = conditional_gan(generator, sample, {**graph, "fake": "generator(z)"})
    with pytest.raises(SpecError, match=message) as error:
        build(load_spec(spec), "cpu")
    assert error.value.problems[0].path[0] == "sample"


@pytest.mark.parametrize(
    ("generator", "sample", "message"),
    [
        ({"num_classes": 10}, {}, "the generator is conditional: set classes"),
        ({"context_features": 10}, {}, "the generator is conditional: set classes"),
        ({}, {"classes": 10}, "the generator takes no condition"),
        ({}, {"classes": 12}, "the generator takes no condition"),
        ({"context_features": 10}, {"classes": 10}, "the generator reads a context of 10 features, not the labels y: set condition"),
    ],
)
def test_a_generator_is_drawn_by_class_exactly_when_it_is_conditional(generator: dict, sample: dict, message: str) -> None:
    spec = conditional_gan({"type": "mlp_generator", "latent_dim": 4, "hidden": [8], **generator}, sample, {"fake": "generator(z)"})
    with pytest.raises(SpecError, match=message) as error:
        build(load_spec(spec), "cpu")
    assert error.value.problems[0].path[0] == "sample"


def test_classes_beyond_the_datas_are_refused_and_every_class_is_drawn_in_the_dry_run() -> None:
    generator = {"type": "mlp_generator", "latent_dim": 4, "hidden": [8], "context_features": 10}
    graph = {"c": "one_hot(y, 10)", "fake": "generator(z, c)"}
    with pytest.raises(SpecError, match=r"the sampler draws 11 classes, but the data's labels have 10 \(0..9\)"):
        build(load_spec(conditional_gan(generator, {"classes": 11, "condition": "c"}, graph)), "cpu")
    spec = load_spec(conditional_gan(generator, {"classes": 10, "condition": "c"}, graph))
    data = build_data(spec)
    model = compile_spec(spec, data, check=False)
    seen = []
    model.component("generator").register_forward_hook(lambda module, args, out: seen.append(args[1]))
    dry_run(model, data)
    drawn = torch.nn.functional.one_hot(torch.arange(15) % 10, 10).float()  # every class, 15 rows: not the class count
    assert torch.equal(seen[-1], drawn), "the sampler's dry run draws one example of every class"


def test_a_generator_of_labels_refuses_one_hot_rows_with_a_hint() -> None:
    generator = {"type": "mlp_generator", "latent_dim": 4, "hidden": [8], "num_classes": 10}
    spec = conditional_gan(generator, {"classes": 10, "condition": "c"}, {"c": "one_hot(y, 10)", "fake": "generator(z, y)"})
    with pytest.raises(SpecError, match="takes integer labels y .*pass y itself, or give it context_features"):
        build(load_spec(spec), "cpu")


def test_sampling_by_class_needs_labelled_data(tmp_path) -> None:
    numpy.savez(tmp_path / "points.npz", x=numpy.random.default_rng(0).normal(size=(100, 2)).astype("float32"))
    spec = {
        "name": "unlabelled",
        "data": {"type": "npz", "path": str(tmp_path / "points.npz")},
        "components": {
            "noise": {"type": "standard_normal", "shape": [2]},
            "generator": {"type": "mlp_generator", "latent_dim": 2, "hidden": [8], "num_classes": 2},
            "critic": {"type": "mlp_critic", "hidden": [8]},
        },
        "graph": {"z": "noise.sample(x)", "fake": "generator(z)"},
        "losses": {"adv": {"type": "non_saturating", "critic": "critic", "real": "x", "fake": "fake"}},
        "players": GAME,
        "sample": {"type": "generator", "noise": "noise", "generator": "generator", "classes": 2},
    }
    with pytest.raises(SpecError, match="the data has no field 'y'"):
        build(load_spec(spec), "cpu")


def conditional_vae(prior: dict, sample: dict, conditioned: list[str]) -> dict:
    """A digits VAE conditioned on c = one_hot(y) through the ``conditioned`` parts, drawn by the ``ancestral`` sampler."""
    def net(part: str, inputs: int, outputs: int) -> dict:
        context = 10 if part in conditioned else 0
        return {"type": "mlp", "in_features": inputs, "out_features": outputs, "hidden": [8], "context_features": context}

    return {
        "name": "cvae",
        "data": {"type": "digits", "binarize": "threshold", "shape": "flat"},
        "graph": {"c": "one_hot(y, 10)"},
        "components": {
            "prior": prior,
            "encoder": {"type": "gaussian_encoder", "latent": 2, "net": net("encoder", 64, 4)},
            "decoder": {"type": "bernoulli_decoder", "net": net("decoder", 2, 64)},
        },
        "losses": {"vae": {"type": "elbo", "encoder": "encoder", "decoder": "decoder", "prior": "prior", "context": "c", "conditioned": conditioned}},
        "sample": {"type": "ancestral", "prior": "prior", "decoder": "decoder", **sample},
    }


STANDARD_PRIOR = {"type": "standard_normal", "shape": [2]}
CONDITIONAL_PRIOR = {
    "type": "flow",
    "base": STANDARD_PRIOR,
    "bijectors": [{"type": "affine_coupling", "shape": [2], "hidden": [8], "context_features": 10}],
}


def test_ancestral_sampling_gives_the_condition_only_to_the_parts_that_read_it() -> None:
    """With ``conditioned: [prior]`` the decoder is blind to c: z ~ p(z|c) carries the class, x ~ p(x|z) does not see it."""
    spec = conditional_vae(CONDITIONAL_PRIOR, {"classes": 10, "condition": "c"}, ["prior"])
    model, _ = build(load_spec(spec), "cpu")
    decoder_inputs, prior_inputs = [], []
    model.component("decoder").register_forward_hook(lambda module, args, out: decoder_inputs.append(args))
    model.component("prior").register_forward_hook(lambda module, args, out: prior_inputs.append(args))
    torch.manual_seed(0)
    with torch.no_grad():
        x = model.sample(12)
    assert x.shape == (12, 64) and len(decoder_inputs[-1]) == 1, "the decoder takes z alone"
    assert torch.equal(prior_inputs[-1][0], torch.nn.functional.one_hot(torch.arange(12) % 10, 10).float())


@pytest.mark.parametrize(
    ("prior", "sample", "conditioned", "message"),
    [
        (STANDARD_PRIOR, {}, ["decoder"], "the decoder is conditional: set classes"),
        (CONDITIONAL_PRIOR, {}, ["prior", "decoder"], "the prior and the decoder are conditional: set classes"),
        (STANDARD_PRIOR, {"classes": 10, "condition": "c"}, ["encoder"], "neither the prior nor the decoder takes a condition"),
        (  # condition left to default to y, one label per example, for a decoder trained on c = one_hot(y, 10)
            STANDARD_PRIOR,
            {"classes": 10},
            ["decoder"],
            r"the decoder reads a context of 10 features, not the labels y: set condition to the graph value it was trained on",
        ),
    ],
)
def test_an_ancestral_sampler_is_drawn_by_class_exactly_when_its_model_is_conditional(
    prior: dict, sample: dict, conditioned: list[str], message: str
) -> None:
    spec = conditional_vae(prior, sample, conditioned)
    with pytest.raises(SpecError, match=message) as error:
        build(load_spec(spec), "cpu")
    assert error.value.problems[0].path[0] == "sample"
