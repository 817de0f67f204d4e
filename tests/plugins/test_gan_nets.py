"""GAN generators and critics refuse inputs they would otherwise misread (shapes, z sizes, labels), and warn of outputs the data leave.

(Shapes, call forms and heads of the working networks are in ``test_convnets.py``.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import compose_gen as cg
from compose_gen import make_catalogue
from compose_gen.runtime import build as build_spec
from compose_gen.spec import SpecError
from compose_gen_plugins import convnets, gan_nets

CATALOGUE = make_catalogue([convnets, gan_nets], entry_points=False)
SMALL = {"base_channels": 4}


class Context:
    data = None

    def component(self, ref: str) -> nn.Module:
        raise KeyError(ref)


def build(type_name: str, **params: object) -> nn.Module:
    component_type = CATALOGUE.get(type_name)
    return component_type.build(component_type.params(**params), Context())


# --- critics refuse inputs whose examples are not their image_shape / in_shape ----------------------


def test_a_conv_critic_refuses_larger_images_instead_of_scoring_each_as_several() -> None:
    """A (N, 1, 16, 16) batch reshaped to 8x8 images would be 4N examples, scored as (N, 4) beside real (N, 1)."""
    critic = build("conv_critic", image_shape=[1, 8, 8], **SMALL)
    assert critic(torch.rand(5, 1, 8, 8)).shape == (5, 1)
    with pytest.raises(ValueError) as error:
        critic(torch.rand(5, 1, 16, 16))
    message = str(error.value)
    assert "(1, 8, 8) (its image_shape)" in message and "(5, 1, 16, 16)" in message
    assert "examples are (1, 16, 16)" in message and "4 examples each" in message
    assert "image_shape: [1, 16, 16]" in message, "says how to fix it"
    with pytest.raises(ValueError, match="image_shape"):
        critic.features(torch.rand(5, 1, 16, 16))


@pytest.mark.parametrize(
    ("in_shape", "x_shape", "example"),
    [
        ([64], (5, 63), "(63,)"),  # a generator one feature short
        ([64], (5, 1, 8, 8), "(1, 8, 8)"),  # as many elements, in another shape
        ([1, 8, 8], (5, 64), "(64,)"),
        ([2], (5, 4), "(4,)"),  # twice the size: would be read as two examples each
    ],
)
def test_an_mlp_critic_refuses_examples_that_are_not_its_in_shape(in_shape: list[int], x_shape: tuple, example: str) -> None:
    critic = build("mlp_critic", in_shape=in_shape, hidden=[8])
    with pytest.raises(ValueError) as error:
        critic(torch.rand(*x_shape))
    message = str(error.value)
    assert f"{tuple(in_shape)} (its in_shape)" in message and f"examples are {example}" in message
    assert f"in_shape: {list(x_shape[1:])}" in message


def test_critics_still_broadcast_over_leading_dims() -> None:
    critic = build("mlp_critic", in_shape=[1, 8, 8], hidden=[8]).eval()
    x = torch.rand(2, 3, 1, 8, 8)
    torch.testing.assert_close(critic(x)[1], critic(x[1]))
    assert critic(torch.rand(1, 8, 8)).shape == (1,), "a single example without a batch dim"


# --- joint critics: z of joint_dim ------------------------------------------------------------------


@pytest.mark.parametrize("type_name", ["mlp_critic", "conv_critic"])
def test_a_joint_critic_refuses_z_of_another_size_naming_both(type_name: str) -> None:
    shape = {"image_shape": [1, 8, 8], **SMALL} if type_name == "conv_critic" else {"in_shape": [1, 8, 8], "hidden": [8]}
    critic = build(type_name, joint_dim=16, **shape)
    x = torch.rand(5, 1, 8, 8)
    assert critic(x, torch.randn(5, 16)).shape == (5, 1)
    with pytest.raises(ValueError) as error:
        critic(x, torch.randn(5, 8))
    message = str(error.value)
    assert "z has shape (5, 8)" in message and "joint_dim=16" in message and "size of z (8)" in message
    with pytest.raises(ValueError, match=r"z of shape \(4, 16\) does not match the batch \(5,\)"):
        critic(x, torch.randn(4, 16))


def test_a_critic_given_inputs_it_does_not_take_says_which_parameter_would_take_them() -> None:
    critic = build("mlp_critic", in_shape=[2], hidden=[8])
    with pytest.raises(TypeError, match=r"critic\(x\); got 2 inputs \(\(3, 2\), \(3,\)\): give it num_classes"):
        critic(torch.randn(3, 2), torch.zeros(3, dtype=torch.long))
    conditional = build("mlp_critic", in_shape=[2], hidden=[8], num_classes=3)
    with pytest.raises(TypeError, match=r"pass the labels y \(on a loss, labels: y\)"):
        conditional(torch.randn(3, 2))


# --- generators: z of latent_dim --------------------------------------------------------------------


@pytest.mark.parametrize("type_name", ["mlp_generator", "conv_generator"])
def test_a_generator_refuses_z_of_another_size(type_name: str) -> None:
    shape = {"image_shape": [1, 8, 8], **SMALL} if type_name == "conv_generator" else {"out_shape": [4], "hidden": [8]}
    generator = build(type_name, latent_dim=8, **shape)
    with pytest.raises(ValueError, match=r"z has shape \(5, 6\), but its latent_dim is 8: set latent_dim to the size of z \(6\)"):
        generator(torch.randn(5, 6))


# --- labels: integer, one per example, in 0..num_classes-1 -----------------------------------------


def test_float_labels_advice_names_only_what_the_component_supports() -> None:
    """A generator can read a vector (context_features); a critic cannot, so it is not told to."""
    z, c = torch.randn(5, 4), torch.randn(5, 16)
    generator = build("mlp_generator", latent_dim=4, out_shape=[2], hidden=[8], num_classes=10)
    with pytest.raises(TypeError) as error:
        generator(z, c)
    assert "integer labels" in str(error.value) and "context_features: 16" in str(error.value)
    with pytest.raises(TypeError, match=r"shape \(5, 1, 8, 8\): pass y itself, one integer label per example$"):
        generator(z, torch.rand(5, 1, 8, 8))  # an image has no vector context_features could read (it was told 8)
    for type_name, shape in [("mlp_critic", {"in_shape": [2], "hidden": [8]}), ("conv_critic", {"image_shape": [1, 8, 8], **SMALL})]:
        critic = build(type_name, num_classes=10, conditioning="concat", **shape)
        with pytest.raises(TypeError) as error:
            critic(torch.rand(5, *shape.get("in_shape", [1, 8, 8])), c)
        message = str(error.value)
        assert "integer labels" in message and "labels: y" in message
        assert "context_features" not in message, "critics have no context_features"
    unconditional = build("mlp_generator", latent_dim=4, out_shape=[2], hidden=[8])
    with pytest.raises(TypeError, match="not conditional.*call it as G\\(z\\), or give it num_classes"):
        unconditional(z, torch.zeros(5, dtype=torch.long))


CONDITIONAL = [
    ("mlp_generator", {"latent_dim": 4, "out_shape": [2], "hidden": [8]}, "generator"),
    ("conv_generator", {"latent_dim": 4, "image_shape": [1, 8, 8], **SMALL}, "generator"),
    ("mlp_critic", {"in_shape": [2], "hidden": [8]}, "critic"),
    ("mlp_critic", {"in_shape": [2], "hidden": [8], "conditioning": "concat"}, "critic"),
    ("conv_critic", {"image_shape": [1, 8, 8], **SMALL}, "critic"),
]


def call(net: nn.Module, params: dict, labels: torch.Tensor) -> torch.Tensor:
    n = len(labels)
    if "latent_dim" in params:
        return net(torch.randn(n, params["latent_dim"]), labels)
    return net(torch.rand(n, *params.get("in_shape", params.get("image_shape"))), labels)


@pytest.mark.parametrize(("type_name", "params", "who"), CONDITIONAL)
def test_labels_beyond_num_classes_are_refused_with_the_range(type_name: str, params: dict, who: str) -> None:
    net = build(type_name, num_classes=9, **params)
    assert call(net, params, torch.arange(9)).shape[0] == 9
    with pytest.raises(IndexError) as error:
        call(net, params, torch.tensor([0, 3, 9, 1]))
    message = str(error.value)
    assert f"labels go up to 9, but this {who} has num_classes=9 (labels 0..8)" in message
    assert "set num_classes to at least 10" in message
    with pytest.raises(IndexError, match=r"labels go down to -1, but this .* \(labels 0\.\.8\)"):
        call(net, params, torch.tensor([0, -1, 2]))


def test_labels_must_give_one_label_per_example() -> None:
    generator = build("mlp_generator", latent_dim=4, out_shape=[2], hidden=[8], num_classes=3)
    with pytest.raises(ValueError, match=r"labels of shape \(4,\) do not match its input's batch \(5,\)"):
        generator(torch.randn(5, 4), torch.zeros(4, dtype=torch.long))


def test_the_label_range_is_checked_on_every_cpu_call_and_on_the_first_accelerator_calls_only() -> None:
    """No host sync per step on an accelerator: after its first calls (the dry run's) a module stops reading labels back."""
    generator = build("mlp_generator", latent_dim=4, out_shape=[2], hidden=[8], num_classes=3)
    cpu = torch.zeros(4, dtype=torch.long)
    assert all(generator._range_check_due(cpu) for _ in range(3 * gan_nets.DEVICE_LABEL_CHECKS))
    device = torch.zeros(4, dtype=torch.long, device="meta")  # any tensor not on the CPU takes the accelerator path
    due = [generator._range_check_due(device) for _ in range(gan_nets.DEVICE_LABEL_CHECKS + 5)]
    assert due == [True] * gan_nets.DEVICE_LABEL_CHECKS + [False] * 5
    assert not generator._range_check_due(torch.zeros(0, dtype=torch.long)), "nothing to check"


# --- through the dry run of a spec --------------------------------------------------------------------


def conditional_spec(num_classes: int) -> dict:
    return {
        "name": "labels",
        "data": {"type": "digits", "shape": "image"},
        "components": {
            "noise": {"type": "standard_normal", "shape": [4]},
            "G": {"type": "conv_generator", "latent_dim": 4, "num_classes": num_classes, **SMALL},
            "D": {"type": "conv_critic", "num_classes": 10, **SMALL},
        },
        "graph": {"z": "noise.sample(x)", "fake": "G(z, y)"},
        "losses": {"adv": {"type": "non_saturating", "critic": "D", "fake": "fake", "labels": "y"}},
        "players": {"d": {"params": ["D"], "terms": ["adv.critic"]}, "g": {"params": ["G"], "terms": ["adv.generator"]}},
        "train": {"steps": 1},
    }


def test_the_dry_run_blames_the_generator_whose_num_classes_the_labels_exceed() -> None:
    with pytest.raises(SpecError) as error:
        build_spec(cg.load_spec(conditional_spec(9)), "cpu")
    message = str(error.value)
    assert "components.G" in message and "in component 'G'" in message
    assert "labels go up to 9, but this generator has num_classes=9 (labels 0..8)" in message
    build_spec(cg.load_spec(conditional_spec(10)), "cpu")


# --- a squashed output that cannot reach the data's range is warned of --------------------------------


def generator_spec(generator: dict, transforms: list) -> dict:
    return {
        "name": "range",
        "data": {"type": "digits", "shape": "image", "transforms": transforms},
        "components": {"noise": {"type": "standard_normal", "shape": [4]}, "G": {"latent_dim": 4, **generator}},
        "graph": {"z": "noise.sample(x)", "fake": "G(z)"},
        "losses": {"adv": {"type": "non_saturating", "critic": "D", "fake": "fake"}},
        "players": {"d": {"params": ["D"], "terms": ["adv.critic"]}, "g": {"params": ["G"], "terms": ["adv.generator"]}},
        "train": {"steps": 1},
    }


SIGNED = [{"type": "scale", "a": 2.0, "b": -1.0}]  # digits in [-1, 1]
WIDE = [{"type": "standardise"}]  # digits beyond [-1, 1]


@pytest.mark.parametrize(
    "generator, transforms, advice",
    [
        ({"type": "conv_generator", "output": "sigmoid", **SMALL}, SIGNED, r"output: sigmoid gives values in \(0, 1\), but \d+\.?\d*% of the data's x lie outside it \(they span \[-1, 1\]\), which its samples can never reach: use output: tanh"),
        ({"type": "mlp_generator", "hidden": [8], "output": "tanh"}, WIDE, r"output: tanh gives values in \(-1, 1\), .*use output: none"),
        ({"type": "mlp_generator", "hidden": [8], "output": "sigmoid", "out_shape": [1, 8, 8]}, SIGNED, r"use output: tanh"),
    ],
)
def test_a_generator_squashing_outside_the_data_range_is_warned_of(generator: dict, transforms: list, advice: str) -> None:
    spec = generator_spec(generator, transforms)
    spec["components"]["D"] = {"type": "mlp_critic", "hidden": [8]}
    with pytest.warns(cg.SpecWarning, match=r"components\.G: type '\w+' \(plugin '\w+'\): .*" + advice):
        build_spec(cg.load_spec(spec), "cpu")


@pytest.mark.parametrize("output, transforms", [("sigmoid", []), ("tanh", []), ("tanh", SIGNED), ("none", WIDE)])
def test_a_generator_whose_output_reaches_the_data_range_is_not_warned_of(output: str, transforms: list, recwarn) -> None:
    spec = generator_spec({"type": "conv_generator", "output": output, **SMALL}, transforms)
    spec["components"]["D"] = {"type": "conv_critic", **SMALL}
    build_spec(cg.load_spec(spec), "cpu")
    assert not [str(w.message) for w in recwarn if "gives values in" in str(w.message)]


def test_a_translator_is_checked_against_both_domains_of_unpaired_data() -> None:
    spec = cg.load_spec(Path(__file__).parents[2] / "specs" / "cyclegan_digits.yaml", ["data.source.transforms=[{type: scale, a: 2.0, b: -1.0}]"])
    with pytest.warns(cg.SpecWarning, match=r"components\.g_ab: .*output: sigmoid gives values in \(0, 1\), but \d+\.?\d*% of the data's a lie outside"):
        build_spec(spec, "cpu")


def test_values_a_hair_past_the_bound_fit(tmp_path, recwarn) -> None:
    """A stray value 0.4% of the range past 1 (rounding, an odd pixel) is no reason to give up a sigmoid."""
    x = torch.rand(64, 1, 8, 8)
    x[::7, 0, 0, 0] = 1.004
    np.save(tmp_path / "x.npy", x.numpy())
    spec = generator_spec({"type": "conv_generator", "output": "sigmoid", **SMALL}, [])
    spec["data"] = {"type": "npy", "path": str(tmp_path / "x.npy")}
    spec["components"]["D"] = {"type": "conv_critic", **SMALL}
    build_spec(cg.load_spec(spec), "cpu")
    assert not [str(w.message) for w in recwarn if "gives values in" in str(w.message)]


def test_a_plain_mlp_of_the_data_s_size_is_checked_like_a_generator() -> None:
    spec = generator_spec({}, SIGNED)
    spec["components"]["G"] = {"type": "mlp", "in_features": 4, "out_features": [1, 8, 8], "hidden": [8], "output": "sigmoid"}
    spec["components"]["D"] = {"type": "mlp_critic", "hidden": [8]}
    with pytest.warns(cg.SpecWarning, match=r"components\.G: type 'mlp' \(plugin 'networks'\): output: sigmoid gives values in \(0, 1\)"):
        build_spec(cg.load_spec(spec), "cpu")


def test_a_plain_mlp_giving_one_number_is_taken_for_a_score_not_for_one_dimensional_data(tmp_path, recwarn) -> None:
    np.save(tmp_path / "x.npy", np.linspace(-3, 3, 64, dtype=np.float32)[:, None])
    spec = generator_spec({"type": "mlp_generator", "hidden": [8]}, [])
    spec["data"] = {"type": "npy", "path": str(tmp_path / "x.npy")}
    spec["components"]["D"] = {"type": "mlp", "in_features": 1, "out_features": 1, "hidden": [8], "output": "sigmoid"}
    build_spec(cg.load_spec(spec), "cpu")
    assert not [str(w.message) for w in recwarn if "gives values in" in str(w.message)]
