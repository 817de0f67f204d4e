"""Adversarial losses against hand-computed values and direct autograd; the spec-level advice on Lipschitz critics."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch
from torch import Tensor, nn

import compose_gen as cg
from compose_gen.runtime import build as build_spec
from compose_gen.spec import SpecError, SpecWarning
from compose_gen.testing.plugins import plugin
from compose_gen_plugins import adversarial
from gan_losses import BOTH, CATALOGUE, FAKE, REAL, Recorder, ScoreIsInput, build, inputs, mean


def log_sigmoid(d: float) -> float:
    return math.log(1.0 / (1.0 + math.exp(-d)))


def log_one_minus_sigmoid(d: float) -> float:
    return math.log(1.0 - 1.0 / (1.0 + math.exp(-d)))


EXPECTED = {
    # name: (params, critic term, generator term)
    "minimax": (
        {},
        -mean([log_sigmoid(d) for d in REAL]) - mean([log_one_minus_sigmoid(d) for d in FAKE]),
        mean([log_one_minus_sigmoid(d) for d in FAKE]),
    ),
    "non_saturating": (
        {},
        -mean([log_sigmoid(d) for d in REAL]) - mean([log_one_minus_sigmoid(d) for d in FAKE]),
        -mean([log_sigmoid(d) for d in FAKE]),
    ),
    "wasserstein": ({}, mean(FAKE) - mean(REAL), -mean(FAKE)),  # -0.75 - 2 = -2.75; 0.75
    "hinge": ({}, 0.0 + mean([0.0, 1.5]), 0.75),
    "least_squares": ({}, 0.5 * mean([0.0, 4.0]) + 0.5 * mean([4.0, 0.25]), 0.5 * mean([9.0, 0.25])),
    "non_saturating_smoothed": (
        {"label_smoothing": 0.1},
        -mean([0.9 * log_sigmoid(d) + 0.1 * log_one_minus_sigmoid(d) for d in REAL])
        - mean([log_one_minus_sigmoid(d) for d in FAKE]),
        -mean([log_sigmoid(d) for d in FAKE]),
    ),
    "least_squares_symmetric": (  # Mao et al.'s a = -1, b = 1, c = 0
        {"real_target": 1.0, "fake_target": -1.0, "generator_target": 0.0},
        0.5 * mean([0.0, 4.0]) + 0.5 * mean([1.0, 2.25]),
        0.5 * mean([4.0, 0.25]),
    ),
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_terms_equal_their_definitions(case: str) -> None:
    params, critic_term, generator_term = EXPECTED[case]
    loss = build(case.removesuffix("_smoothed").removesuffix("_symmetric"), ScoreIsInput(), fake="f", **params)
    out = loss(inputs(), BOTH)
    assert out["critic"].item() == pytest.approx(critic_term, abs=1e-12)
    assert out["generator"].item() == pytest.approx(generator_term, abs=1e-12)
    assert out["d_real"].item() == pytest.approx(mean(REAL))
    assert out["d_fake"].item() == pytest.approx(mean(FAKE))


def test_wasserstein_reports_the_critic_estimate() -> None:
    out = build("wasserstein", ScoreIsInput(), fake="f")(inputs(), BOTH)
    assert out["wasserstein"].item() == pytest.approx(mean(REAL) - mean(FAKE))


@pytest.mark.parametrize("name", ["minimax", "non_saturating", "wasserstein", "hinge", "least_squares"])
def test_generator_term_needs_no_real_value(name: str) -> None:
    loss = build(name, ScoreIsInput(), fake="f", labels="y")
    names = ["real", "fake", "labels"]
    assert loss.inputs_for({"generator"}, names) == {"fake", "labels"}
    assert loss.inputs_for({"critic"}, names) == set(names)
    only_fake = {"fake": inputs()["fake"]}
    assert set(build(name, ScoreIsInput(), fake="f")(only_fake, frozenset({"generator"}))) == {"generator", "d_fake"}


def test_generator_on_real_scores_real_pairs_as_fake() -> None:
    """BiGAN: with real = (x, E(x)) the encoder's term -log(1 - D(x, E(x))) joins the generator's."""
    loss = build("non_saturating", ScoreIsInput(), fake="f", generator_on_real=True)
    assert loss.inputs_for({"generator"}, ["real", "fake"]) == {"real", "fake"}
    out = loss(inputs(), frozenset({"generator"}))
    expected = -mean([log_sigmoid(d) for d in FAKE]) - mean([log_one_minus_sigmoid(d) for d in REAL])
    assert out["generator"].item() == pytest.approx(expected, abs=1e-12)


def test_joint_and_conditional_critics_get_all_their_inputs() -> None:
    critic = Recorder()
    loss = build("hinge", critic, real=["x", "z_hat"], fake=["g", "z"], labels="y", fake_labels="y_fake")
    x, z_hat, g, z = (torch.randn(3, 2) for _ in range(4))
    y, y_fake = torch.tensor([0, 1, 2]), torch.tensor([2, 2, 0])
    loss({"real": (x, z_hat), "fake": (g, z), "labels": y, "fake_labels": y_fake}, BOTH)
    fake_call, real_call = critic.calls
    assert all(a is b for a, b in zip(real_call, (x, z_hat, y), strict=True))
    assert all(a is b for a, b in zip(fake_call, (g, z, y_fake), strict=True))


def test_weight_clipping_clamps_after_critic_steps_only() -> None:
    critic = nn.Linear(3, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[0.5, -0.002, -3.0]]))
        critic.bias.fill_(0.2)
    loss = build("wasserstein", critic, fake="f", clip=0.01)
    loss.after_step(frozenset({"generator"}))
    assert critic.weight[0, 0].item() == 0.5
    loss.after_step(frozenset({"critic"}))
    assert critic.weight[0].tolist() == pytest.approx([0.01, -0.002, -0.01])
    assert critic.bias.item() == pytest.approx(0.01)


def test_weight_clipping_leaves_a_frozen_parameter_as_it_is() -> None:
    """A fixed projection (requires_grad=False) is not trained, so clipping, part of training it, leaves it too."""
    critic = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 1))
    critic[0].weight.requires_grad_(False)
    frozen = critic[0].weight.clone()
    build("wasserstein", critic, fake="f", clip=0.01).after_step(frozenset({"critic"}))
    assert torch.equal(critic[0].weight, frozen)
    assert critic[1].weight.abs().max().item() <= 0.01


def test_instance_noise_has_its_std_and_decays_linearly() -> None:
    critic = Recorder()
    loss = build("wasserstein", critic, fake="f", instance_noise=0.5, noise_decay_steps=4)
    x = torch.zeros(20000, 1, dtype=torch.float64)
    loss({"real": x, "fake": x}, BOTH)
    for args in critic.calls:
        assert args[0].std().item() == pytest.approx(0.5, rel=0.03)
    for expected in (0.375, 0.25, 0.125, 0.0, 0.0):
        loss.after_step(frozenset({"critic"}))
        assert float(loss.noise_std()) == pytest.approx(expected)
    critic.calls.clear()
    loss({"real": x, "fake": x}, BOTH)
    assert all(args[0].abs().max().item() == 0 for args in critic.calls)
    loss.after_step(frozenset({"generator"}))
    assert int(loss.critic_steps) == 5, "only critic steps advance the schedule"
    assert "critic_steps" in loss.state_dict(), "the schedule survives a checkpoint"


def test_critic_is_referenced_not_owned() -> None:
    loss = build("hinge", nn.Linear(2, 1), fake="f")
    assert list(loss.parameters()) == []


def test_scores_of_an_auxiliary_classifier_critic_are_its_first_output() -> None:
    class WithClasses(nn.Module):
        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            return x, torch.zeros(len(x), 3)

    out = build("wasserstein", WithClasses(), fake="f")(inputs(), BOTH)
    assert out["critic"].item() == pytest.approx(mean(FAKE) - mean(REAL))


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError):
        CATALOGUE.get("non_saturating").params(critic="c", fake="f", label_smoothing=1.0)
    with pytest.raises(pydantic.ValidationError):
        CATALOGUE.get("wasserstein").params(critic="c", fake="f", clip=-0.01)
    with pytest.raises(pydantic.ValidationError):
        CATALOGUE.get("hinge").params(critic="c", fake="f", label_smoothing=0.1)
    with pytest.raises(pydantic.ValidationError, match="noise_decay_steps decays instance_noise, which is 0"):
        CATALOGUE.get("hinge").params(critic="c", fake="f", noise_decay_steps=100)  # a schedule for no noise
def test_every_type_is_a_loss() -> None:
    assert {t.name for t in CATALOGUE.of_kind("loss")} == {
        "minimax", "non_saturating", "wasserstein", "hinge", "least_squares", "gradient_penalty",
        "r1_penalty", "feature_matching", "auxiliary_classifier", "cycle_consistency", "identity_mapping",
    }  # fmt: skip
    assert all(t.doc for t in CATALOGUE.types.values())


ROUND_TRIP = {
    "cycle_consistency": {"real": "a", "reconstructed": "aba"},
    "identity_mapping": {"real": "b", "mapped": "bb"},
    "r1_penalty": {"critic": "d", "real": ["x", "z_hat"]},
}


@pytest.mark.parametrize("type_name", sorted(CATALOGUE.types))
def test_parameters_survive_a_dump_and_reload(type_name: str) -> None:
    """Run folders store the resolved spec with every default written out; it must load again."""
    model = CATALOGUE.get(type_name).params
    parsed = model(**ROUND_TRIP.get(type_name, {"critic": "d", "real": ["x", "z_hat"], "fake": ["g", "z"]}))
    assert model.model_validate(parsed.model_dump(mode="json")) == parsed


# --- real and fake must be shaped alike --------------------------------------------------------------


class FlatteningCritic(nn.Module):
    """Like a critic built for (1, 8, 8) examples that reshapes its input: a (N, 1, 16, 16) batch gives (N, 4) scores."""

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(-1, 64).mean(-1).reshape(len(x), -1)

    def features(self, x: Tensor) -> Tensor:
        return x.reshape(-1, 64)


ADVERSARIAL = ["minimax", "non_saturating", "wasserstein", "hinge", "least_squares"]


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_a_generator_output_not_shaped_like_the_data_is_refused_naming_both_shapes(name: str) -> None:
    loss = build(name, FlatteningCritic(), real="x", fake="fake")
    real, fake = torch.rand(5, 1, 8, 8), torch.rand(5, 1, 16, 16)
    loss({"real": real, "fake": torch.rand(5, 1, 8, 8)}, BOTH)
    with pytest.raises(ValueError) as error:
        loss({"real": real, "fake": fake}, BOTH)
    message = str(error.value)
    assert "fake 'fake' has examples of shape (1, 16, 16)" in message and "real 'x' has (1, 8, 8)" in message
    assert "generator's image_shape or out_shape to [1, 8, 8]" in message
    with pytest.raises(ValueError, match=r"\(63,\).*\(64,\)"):
        loss({"real": torch.rand(5, 64), "fake": torch.rand(5, 63)}, BOTH)
    # the generator's step reads no real value, so it has nothing to compare
    assert set(loss({"fake": fake}, frozenset({"generator"}))) == {"generator", "d_fake"}


def test_real_and_fake_may_differ_in_batch_size_but_not_in_their_inputs() -> None:
    loss = build("hinge", Recorder(), real=["x", "z_hat"], fake=["fake", "z"], generator_on_real=True)
    x, z = torch.randn(4, 3), torch.randn(4, 2)
    loss({"real": (x, z), "fake": (torch.randn(6, 3), torch.randn(6, 2))}, BOTH)
    with pytest.raises(ValueError) as error:
        loss({"real": (x, torch.randn(4, 6)), "fake": (torch.randn(4, 3), z)}, frozenset({"generator"}))
    message = str(error.value)
    assert "critic input 2 of 2" in message and "fake 'z' has examples of shape (2,)" in message and "real 'z_hat' has (6,)" in message
    assert "encoder's out_features" in message
    with pytest.raises(ValueError, match="in another order: list real and fake in the same order"):
        loss({"real": (x, z), "fake": (z, x)}, BOTH)
    with pytest.raises(ValueError, match=r"real has 2 critic input\(s\) \(x, z_hat\) but fake has 1"):
        loss({"real": (x, z), "fake": x}, BOTH)
def test_the_dry_run_blames_the_loss_for_a_generator_not_shaped_like_the_data() -> None:
    """A conv generator of 16x16 images on 8x8 digits, without a `sample:` section to compare with the data."""
    spec = {
        "name": "shapes",
        "data": {"type": "digits", "shape": "image"},
        "components": {
            "noise": {"type": "standard_normal", "shape": [4]},
            "G": {"type": "conv_generator", "latent_dim": 4, "image_shape": [1, 16, 16], "base_channels": 4},
            "D": {"type": "conv_critic", "base_channels": 4},
        },
        "graph": {"z": "noise.sample(x)", "fake": "G(z)"},
        "losses": {"adv": {"type": "non_saturating", "critic": "D", "fake": "fake"}},
        "players": {"d": {"params": ["D"], "terms": ["adv.critic"]}, "g": {"params": ["G"], "terms": ["adv.generator"]}},
        "train": {"steps": 1},
    }
    with pytest.raises(SpecError) as error:
        build_spec(cg.load_spec(spec), "cpu")
    message = str(error.value)
    assert "losses.adv" in message and "fake 'fake' has examples of shape (1, 16, 16)" in message
    assert "real 'x' has (1, 8, 8)" in message


def _wgan(critic: dict, adv: dict, extra_losses: dict | None = None) -> dict:
    losses = {"adv": {"type": "wasserstein", "critic": "critic", "real": "x", "fake": "fake", **adv}, **(extra_losses or {})}
    critic_terms = ["adv.critic", *(f"{name}.critic" for name in extra_losses or {})]
    return {
        "name": "wgan",
        "data": {"type": "eight_gaussians", "n": 200},
        "components": {
            "noise": {"type": "standard_normal", "shape": [2]},
            "generator": {"type": "mlp_generator", "latent_dim": 2, "hidden": [8]},
            "critic": {"type": "mlp_critic", "hidden": [8], **critic},
        },
        "graph": {"z": "noise.sample(x)", "fake": "generator(z)"},
        "losses": losses,
        "players": {"critic": {"params": ["critic"], "terms": critic_terms}, "generator": {"params": ["generator"], "terms": ["adv.generator"]}},
        "train": {"steps": 1},
    }


UNCONSTRAINED = r"losses\.adv: type 'wasserstein' \(plugin 'adversarial'\): trains a critic that nothing keeps Lipschitz \(no clip, no gradient_penalty"
GP = {"gp": {"type": "gradient_penalty", "critic": "critic", "fake": "fake"}}


def test_a_wasserstein_critic_that_nothing_keeps_lipschitz_is_warned_of_at_the_loss(recwarn) -> None:
    with pytest.warns(SpecWarning, match=UNCONSTRAINED):
        build_spec(cg.load_spec(_wgan({}, {})), "cpu")
    clipped_twin = {"twin": {"type": "wasserstein", "critic": "critic", "real": "x", "fake": "fake", "clip": 0.01}}  # clips the shared critic
    twins = _wgan({}, {}, clipped_twin)
    twins["players"]["generator"]["terms"] = ["adv.generator", "twin.generator"]
    for kept in (_wgan({}, {"clip": 0.01}), _wgan({}, {}, GP), _wgan({"spectral_norm": True}, {}), twins):
        recwarn.clear()
        build_spec(cg.load_spec(kept), "cpu")
        assert not [w for w in recwarn if issubclass(w.category, SpecWarning)], kept


def test_held_out_wasserstein_is_the_held_out_d_real_minus_d_fake() -> None:
    """The generator's pass logs a d_fake of its own noise; the evaluation reports the critic's, as its wasserstein is."""
    model, data = build_spec(cg.load_spec(_wgan({}, {"clip": 0.01})), "cpu")
    logs = model.evaluate_terms(data.test.batch(slice(None)))
    assert logs["adv.wasserstein"].item() == pytest.approx((logs["adv.d_real"] - logs["adv.d_fake"]).item(), abs=1e-6)


def test_an_r1_penalty_keeps_no_wasserstein_critic_lipschitz() -> None:
    """R1 flattens the critic at the real points alone, not between the distributions where W1's estimate needs a bound."""
    with pytest.warns(SpecWarning, match=UNCONSTRAINED):
        build_spec(cg.load_spec(_wgan({}, {}, {"r1": {"type": "r1_penalty", "critic": "critic"}})), "cpu")


def test_a_penalty_that_no_player_trains_keeps_nothing_lipschitz() -> None:
    forgotten = _wgan({}, {}, GP)
    forgotten["players"]["critic"]["terms"] = ["adv.critic"]  # gp.critic left out: the usual slip
    weightless = _wgan({}, {}, {"gp": {**GP["gp"], "weight": 0.0}})
    unweighted = _wgan({}, {}, GP)
    unweighted["players"]["critic"]["terms"] = {"adv.critic": 1.0, "gp.critic": 0.0}
    for spec in (forgotten, weightless, unweighted):
        with pytest.warns(SpecWarning, match=UNCONSTRAINED):
            build_spec(cg.load_spec(spec), "cpu")


def test_spectral_norm_does_not_keep_a_batch_normalised_critic_lipschitz() -> None:
    with pytest.warns(SpecWarning, match=UNCONSTRAINED + r".*spectral_norm undone by its batch norm"):
        build_spec(cg.load_spec(_wgan({"spectral_norm": True, "norm": "batch"}, {})), "cpu")


def test_batch_norm_is_found_in_any_layer_but_layer_norm_is_not_batch_norm() -> None:
    assert adversarial.batch_normalised(nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.BatchNorm1d(2))))
    assert adversarial.batch_normalised(nn.Sequential(nn.SyncBatchNorm(2)))
    assert not adversarial.batch_normalised(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2), nn.InstanceNorm2d(2)))


def test_spectral_norm_is_found_by_parametrization_or_by_the_older_hook() -> None:
    assert adversarial.spectrally_normalised(nn.Sequential(nn.Linear(2, 2), nn.utils.parametrizations.spectral_norm(nn.Linear(2, 1))))
    assert adversarial.spectrally_normalised(nn.Sequential(nn.utils.spectral_norm(nn.Linear(2, 1))))
    assert not adversarial.spectrally_normalised(nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(2, 1))))


def test_advice_that_raises_is_blamed_on_the_loss(monkeypatch) -> None:
    monkeypatch.setattr(adversarial.Wasserstein, "advise", lambda self, losses: 1 / 0)
    with pytest.raises(SpecError, match=r"losses\.adv: type 'wasserstein' \(plugin 'adversarial'\) failed to advise: ZeroDivisionError"):
        build_spec(cg.load_spec(_wgan({}, {"clip": 0.01})), "cpu")


@pytest.mark.parametrize(("returned", "described"), [(None, "None"), ("one message", "a str"), ([1], "a list")])
def test_advice_that_is_no_list_of_messages_is_blamed_on_the_loss(monkeypatch, returned, described) -> None:
    """A fall-through advise (None) failed with a bare TypeError, and a bare string became a warning per character."""
    monkeypatch.setattr(adversarial.Wasserstein, "advise", lambda self, losses: returned)
    with pytest.raises(SpecError, match=rf"losses\.adv: type 'wasserstein' \(plugin 'adversarial'\) advise returned {described}, not a list of messages"):
        build_spec(cg.load_spec(_wgan({}, {"clip": 0.01})), "cpu")


class PooledScore(nn.Module):
    """A plugin critic that scores as ``pools`` says: ``mean`` the whole batch at once, ``first`` the first example alone,
    else two scores an example (as mlp_critic's out_features: 2)."""

    def __init__(self, pools: str) -> None:
        super().__init__()
        self.net, self.pools = nn.Linear(2, 2), pools

    def forward(self, x: Tensor) -> Tensor:
        scores = self.net(x)
        return scores.mean() if self.pools == "mean" else scores[:1] if self.pools == "first" else scores


class PoolsParams(cg.Params):
    pools: str = ""


@pytest.mark.parametrize(("pools", "shape"), [("mean", r"\(\)"), ("first", r"\(1, 2\)")])
def test_a_critic_that_does_not_score_each_example_on_its_own_is_blamed(pools: str, shape: str) -> None:
    """A batch-mean critic trained silently, and its gradient penalty (each example's gradient over N) meant nothing."""
    pooled = cg.ComponentType("pooled_critic", "critic", PoolsParams, lambda p, ctx: PooledScore(p.pools))
    catalogue = cg.make_catalogue([plugin(pooled, name="pooling")], entry_points="first-party")
    spec = _wgan({}, {}, GP)
    spec["components"]["critic"] = {"type": "pooled_critic", "pools": pools}
    with pytest.raises(SpecError, match=rf"components\.critic: type 'pooled_critic' \(plugin 'pooling'\) broke the critic contract: forward returned scores of shape {shape} for 5 examples"):
        build_spec(cg.load_spec(spec, catalogue=catalogue), "cpu")
    spec["components"]["critic"]["pools"] = ""
    build_spec(cg.load_spec(spec, catalogue=catalogue), "cpu")
