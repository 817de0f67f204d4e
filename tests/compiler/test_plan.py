"""Per-player plans: only the ancestors of a player's terms, gradient paths, terms and the players of a game."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from compose_gen.runtime import build
from compose_gen.spec import SpecError, SpecWarning, load_spec
from game_toys import errors


def test_plans_hold_only_ancestors_and_mark_gradient_paths(gan_spec, toy_catalogue) -> None:
    model, _ = build(load_spec(gan_spec, catalogue=toy_catalogue), "cpu")
    critic, generator = model.plans["critic"], model.plans["generator"]
    assert [(s.name, s.grad) for s in critic.values] == [("z", False), ("fake", False)]
    assert [(s.name, s.grad) for s in generator.values] == [("z", False), ("fake", True)]
    assert generator.losses[0].inputs == {"fake": "fake"}  # term_inputs: no real data for the generator
    assert critic.losses[0].terms == {"critic"}
    assert {id(p) for p in critic.params} == {id(p) for p in model.component("critic").parameters()}


def test_critic_step_runs_the_generator_without_autograd(gan_spec, toy_catalogue) -> None:
    model, data = build(load_spec(gan_spec, catalogue=toy_catalogue), "cpu")
    batch = data.train.batch(slice(0, 8))
    seen = {}
    model.component("generator").register_forward_hook(lambda m, i, o: seen.update(grad=o.requires_grad))
    model.player_loss("critic", batch)
    assert seen["grad"] is False
    model.player_loss("generator", batch)
    assert seen["grad"] is True


def test_unknown_term_and_ambiguous_term(gan_spec, toy_catalogue) -> None:
    spec = copy.deepcopy(gan_spec)
    spec["players"]["critic"]["terms"] = ["adv.critc"]
    assert """players.critic.terms."adv.critc": unknown loss term 'adv.critc'; did you mean 'adv.critic'?""" in errors(spec, toy_catalogue)
    gan_spec["players"]["critic"]["terms"] = ["adv"]
    assert "name one of adv.critic, adv.generator" in errors(gan_spec, toy_catalogue)


@pytest.mark.parametrize(
    "terms, said",
    [
        (["adv.critic", "gp", "gp.critic"], """players.critic.terms."gp.critic": 'gp.critic' is term 'gp.critic', which 'gp' names already; list it once"""),
        ({"adv.critic": 1.0, "gp.critic": 1.0, "gp": 5.0}, "players.critic.terms.gp: 'gp' is term 'gp.critic', which 'gp.critic' names already"),
    ],
    ids=["list", "weights"],
)
def test_one_term_named_two_ways_is_refused(catalogue, terms, said) -> None:
    """A one-term loss's name stands for its term (``gp`` for ``gp.critic``): listed both ways it counted once, and with
    weights the last one won."""
    spec = yaml.safe_load((Path(__file__).parents[2] / "specs" / "wgan_gp_8gaussians.yaml").read_text())
    spec["players"]["critic"]["terms"] = terms
    assert said in errors(spec, catalogue)


def test_a_misspelt_component_in_params_is_the_one_error_said(gan_spec, toy_catalogue) -> None:
    """Its knock-on, "player 'generator' has no parameters to update", only repeated the typo in other words."""
    gan_spec["players"]["generator"]["params"] = ["generatr"]
    assert errors(gan_spec, toy_catalogue).splitlines() == [
        "<dict>:1: players.generator.params[0]: unknown component or loss 'generatr'; did you mean 'generator'?"
    ]


def test_a_single_term_loss_is_named_by_its_loss_whatever_its_term_is_called(gan_spec, toy_catalogue) -> None:
    gan_spec["losses"]["gp"] = {"type": "gradient_penalty", "critic": "critic", "real": "x", "fake": "fake"}
    gan_spec["players"]["critic"]["terms"] = ["adv.critic", "gp"]  # gradient_penalty's one term is `critic`
    model, _ = build(load_spec(gan_spec, catalogue=toy_catalogue), "cpu")
    assert {call.name: set(call.terms) for call in model.plans["critic"].losses} == {"adv": {"critic"}, "gp": {"critic"}}


def test_player_whose_terms_ignore_its_parameters(gan_spec, toy_catalogue) -> None:
    gan_spec["losses"]["real_only"] = {"type": "toy_adversarial", "critic": "critic", "fake": "x"}
    gan_spec["players"]["generator"]["terms"] = ["real_only.generator"]
    message = errors(gan_spec, toy_catalogue)
    assert "players.generator: none of the terms of player 'generator' depends on its parameters" in message
    gan_spec["players"]["generator"]["params"] = ["noise"]
    assert "players.generator: player 'generator' has no parameters" in errors(gan_spec, toy_catalogue)


def test_both_sides_of_a_game_on_the_same_parameters_are_refused(gan_spec, toy_catalogue) -> None:
    """adv.critic + adv.generator on one parameter is −D(real) for the generator: its gradient is zero, silently."""
    game = gan_spec.pop("players")
    assert "losses.adv: adv.critic and adv.generator oppose each other, but the parameters of generator and critic are trained on both (player model)" in errors(gan_spec, toy_catalogue)
    game["critic"]["params"] = ["critic", "generator"]
    gan_spec["players"] = game
    assert "players: adv.critic and adv.generator oppose each other, but the parameters of generator are trained on both (players critic and generator)" in errors(gan_spec, toy_catalogue)
    from pathlib import Path

    vaegan = load_spec(Path(__file__).parents[2] / "specs" / "vaegan_digits.yaml", ["players.critic.params=[critic, encoder, decoder]"], catalogue=toy_catalogue)
    with pytest.raises(SpecError, match="but the parameters of encoder and decoder are trained on both"):  # not their nets again
        build(vaegan, "cpu")


def test_a_part_both_players_train_on_other_losses_is_no_side_of_the_game(catalogue) -> None:
    """Sides were intersected by the players' parameters, not those the game reaches: a part each player trains on a
    loss of its own was refused as cancelling, and CycleGAN's adv_a was blamed for adv_b's critic."""
    specs = Path(__file__).parents[2] / "specs"
    cycle = yaml.safe_load((specs / "cyclegan_2d.yaml").read_text())
    cycle["players"]["generators"]["params"] = ["g_ab", "g_ba", "d_b"]
    said = errors(cycle, catalogue)
    assert "adv_b.critic and adv_b.generator oppose each other, but the parameters of d_b are trained on both" in said
    assert "adv_a.critic and adv_a.generator" not in said
    gan = yaml.safe_load((specs / "wgan_gp_8gaussians.yaml").read_text())
    gan["components"]["aux"] = {"type": "mlp", "in_features": 2, "out_features": 2, "hidden": [16]}
    gan["graph"]["ax"] = "aux(x)"
    gan["losses"]["rec"] = {"type": "cycle_consistency", "real": "x", "reconstructed": "ax"}
    for player in gan["players"].values():
        player["params"].append("aux")
        player["terms"].append("rec")
    gan["train"].update(steps=2, batch_size=16)
    model, _ = build(load_spec(gan, catalogue=catalogue), "cpu")  # no error: the game reaches no part of aux
    assert set(model.plans) == {"critic", "generator"}


@pytest.mark.parametrize(
    ("players", "messages"),
    [
        (  # each side under the other's player
            {"critic": {"params": ["critic"], "terms": ["adv.generator"]}, "generator": {"params": ["generator"], "terms": ["adv.critic"]}},
            [
                "players.critic: adv.generator is the generator's side of 'adv': it trains what makes the critic's inputs, "
                "but player 'critic' would train critic, the critic itself",
                "players.generator: adv.critic is the critic's side of 'adv': it trains critic, which player 'generator' does not hold",
            ],
        ),
        (  # each player on the other's parameters
            {"critic": {"params": ["generator"], "terms": ["adv.critic"]}, "generator": {"params": ["critic"], "terms": ["adv.generator"]}},
            ["players.critic: adv.critic is the critic's side", "players.generator: adv.generator is the generator's side"],
        ),
        (  # a generator against a critic that never learns
            {"generator": {"params": ["generator"], "terms": ["adv.generator"]}},
            ["players: no player trains adv.critic, so 'adv' is a game of one side: add a player with terms [adv.critic]"],
        ),
    ],
)
def test_a_game_with_its_sides_on_the_wrong_players_is_refused(gan_spec, toy_catalogue, players: dict, messages: list[str]) -> None:
    gan_spec["players"] = players
    found = errors(gan_spec, toy_catalogue)
    assert all(message in found for message in messages), found


def test_a_generator_only_term_on_the_critics_player_is_refused(catalogue) -> None:
    """Feature matching is the generator's side alone of a game against the critic it names; under the critic's
    player it trained the critic to match the generator's features."""
    spec = {
        "name": "fm",
        "data": {"type": "eight_gaussians", "n": 200},
        "components": {
            "noise": {"type": "standard_normal", "shape": [2]},
            "gen": {"type": "mlp_generator", "latent_dim": 2, "hidden": [8]},
            "critic": {"type": "mlp_critic", "hidden": [8]},
        },
        "graph": {"z": "noise.sample(x)", "fake": "gen(z)"},
        "losses": {
            "adv": {"type": "non_saturating", "critic": "critic", "real": "x", "fake": "fake"},
            "fm": {"type": "feature_matching", "critic": "critic", "real": "x", "fake": "fake"},
        },
        "players": {"critic": {"params": ["critic"], "terms": ["adv.critic", "fm"]}, "gen": {"params": ["gen"], "terms": ["adv.generator"]}},
        "train": {"steps": 2, "batch_size": 32},
    }
    assert (
        "players.critic: fm.generator is the generator's side of 'fm': it trains what makes the critic's inputs, but player "
        "'critic' would train critic, the critic itself, to help the generator (put fm.generator under the generator's player)"
    ) in errors(spec, catalogue)
    spec["players"]["critic"]["terms"] = {"adv.critic": 1.0, "fm": 0.0}  # logged there, trained by the generator's player
    spec["players"]["gen"]["terms"] = ["adv.generator", "fm"]
    build(load_spec(spec, catalogue=catalogue), "cpu")


def test_a_player_may_log_the_other_side_of_a_game_with_weight_0(gan_spec, toy_catalogue) -> None:
    """Weight 0 trains nothing, so it neither makes the two sides cancel nor enters the player's loss."""
    gan_spec["players"]["generator"]["terms"] = {"adv.generator": 1.0, "adv.critic": 0.0}
    model, data = build(load_spec(gan_spec, catalogue=toy_catalogue), "cpu")
    batch = {"x": data.train.fields["x"][:8]}
    loss, logs = model.player_loss("generator", batch)
    assert "adv.critic" in logs and torch.equal(loss, logs["adv.generator"])


def test_a_term_or_component_its_player_cannot_train_is_refused(gan_spec, toy_catalogue) -> None:
    """Autograd decides: a gradient penalty detaches the generator's samples, so it trains the critic only."""
    gan_spec["losses"]["gp"] = {"type": "gradient_penalty", "critic": "critic", "real": "x", "fake": "fake"}
    gan_spec["players"]["generator"]["terms"] = ["adv.generator", "gp"]
    assert "players.generator.terms: gp.critic has no gradient path to the parameters of player 'generator'" in errors(gan_spec, toy_catalogue)
    gan_spec["players"]["generator"]["terms"] = ["adv.generator"]
    gan_spec["components"]["encoder"] = {"type": "mlp", "in_features": 2, "out_features": 2, "hidden": [4]}
    gan_spec["players"]["generator"]["params"] = ["generator", "encoder"]  # nothing the generator's terms read uses it
    assert (
        "players.generator.params[1]: none of the terms of player 'generator' (adv.generator) has a gradient path to 'encoder', "
        "so its parameters would never train"
    ) in errors(gan_spec, toy_catalogue)


def test_a_term_logged_with_weight_0_needs_no_path_and_trains_nothing(gan_spec, toy_catalogue) -> None:
    """Weight 0 logs a term: one that cannot reach the player's parameters is fine there, and one that can does not
    count as training them."""
    gan_spec["losses"]["gp"] = {"type": "gradient_penalty", "critic": "critic", "real": "x", "fake": "fake"}
    gan_spec["players"]["generator"]["terms"] = {"adv.generator": 1.0, "gp": 0.0}
    build(load_spec(gan_spec, catalogue=toy_catalogue), "cpu")
    gan_spec["components"]["encoder"] = {"type": "mlp", "in_features": 2, "out_features": 2, "hidden": [4]}
    gan_spec["graph"]["code"] = "encoder(x)"
    gan_spec["losses"]["rec"] = {"type": "cycle_consistency", "real": "x", "reconstructed": "code"}
    gan_spec["players"]["generator"] = {"params": ["generator", "encoder"], "terms": {"adv.generator": 1.0, "rec": 0.0}}
    assert (
        "players.generator.params[1]: none of the terms of player 'generator' (adv.generator) has a gradient path to 'encoder', "
        "so its parameters would never train"
    ) in errors(gan_spec, toy_catalogue)


def test_a_loss_in_params_trains_its_own_parameters_and_is_warned_of_when_left_out(catalogue) -> None:
    """A VQ-VAE's learned codebook belongs to the loss, not to a component: explicit players must be able to name it."""
    spec = yaml.safe_load((Path(__file__).parents[2] / "specs" / "vqvae_digits.yaml").read_text())
    spec["losses"]["vq"]["ema"] = False
    spec["train"]["steps"] = 2
    spec["players"] = {"model": {"params": ["encoder", "decoder"], "terms": ["vq"]}}
    with pytest.warns(SpecWarning, match="losses.vq: has parameters of its own that no player updates, so training leaves them as built"):
        left_out, _ = build(load_spec(spec, catalogue=catalogue), "cpu")
    codebook = left_out.losses["vq"].quantizer.codebook
    assert id(codebook) not in left_out.plans["model"].param_ids
    spec["players"]["model"]["params"].append("vq")
    named, _ = build(load_spec(spec, catalogue=catalogue), "cpu")
    codebook = named.losses["vq"].quantizer.codebook
    encoder = {id(p) for p in named.components["encoder"].parameters()}
    assert id(codebook) in named.plans["model"].param_ids and encoder <= named.plans["model"].param_ids


def test_a_loss_without_parameters_of_its_own_cannot_be_a_players_params(gan_spec, toy_catalogue) -> None:
    gan_spec["players"]["critic"]["params"] = ["critic", "adv"]
    assert "players.critic.params[1]: loss 'adv' has no parameters of its own: list the components it calls" in errors(gan_spec, toy_catalogue)
    gan_spec["players"]["critic"]["params"] = ["critic", "avd"]
    assert "players.critic.params[1]: unknown component or loss 'avd'; did you mean 'adv'?" in errors(gan_spec, toy_catalogue)


def test_a_name_both_a_component_and_a_loss_bear_is_refused_in_params_only(vae_spec, catalogue) -> None:
    """params lists components or losses (for their own parameters): there such a name is ambiguous; elsewhere the
    two are told apart by their section, and runs recorded with such names still load."""
    vae_spec["losses"] = {"prior": vae_spec["losses"].pop("vae")}
    build(load_spec(vae_spec, catalogue=catalogue), "cpu")
    vae_spec["players"] = {"model": {"params": ["encoder", "decoder", "prior"], "terms": ["prior"]}}
    assert "players.model.params[2]: 'prior' names a component and a loss alike, and params may list either: rename one of them" in (
        errors(vae_spec, catalogue)
    )


def test_a_spec_without_losses_is_told_so(gan_spec, toy_catalogue) -> None:
    del gan_spec["losses"], gan_spec["players"]
    assert "losses: the spec has no losses, so there is nothing to train" in errors(gan_spec, toy_catalogue)
