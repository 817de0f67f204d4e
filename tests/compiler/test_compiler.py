"""The compiler: graph checks, per-player plans, and the dry run."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch

from compose_gen import ComponentType, Loss, Params, Ref, Value, make_catalogue
from compose_gen.compiler import assumed_fields, build_graph, compile_spec
from compose_gen.runtime import build
from compose_gen.spec import SpecError, load_spec
from compose_gen.testing.plugins import plugin


class ToyAdversarialParams(Params):
    critic: Ref("network")  # type: ignore[valid-type]
    real: Value = "x"
    fake: Value


class ToyAdversarial(Loss):
    """A minimal two-sided loss: the critic separates real from fake, the generator fools it."""

    terms = ("critic", "generator")
    term_inputs = {"generator": ("fake",)}
    opposed = ("critic", "generator")

    def __init__(self, critic: torch.nn.Module) -> None:
        super().__init__()
        self.critic = critic

    def forward(self, inputs, terms):
        out = {}
        if "critic" in terms:
            out["critic"] = self.critic(inputs["fake"]).mean() - self.critic(inputs["real"]).mean()
        if "generator" in terms:
            out["generator"] = -self.critic(inputs["fake"]).mean()
        return out


TOY = plugin(
    ComponentType("toy_adversarial", "loss", ToyAdversarialParams, lambda p, ctx: ToyAdversarial(ctx.component(p.critic)), doc="Toy."),
    name="toy",
)


@pytest.fixture(scope="module")
def catalogue():
    return make_catalogue([TOY])


@pytest.fixture
def gan_spec() -> dict:
    return {
        "name": "toy_gan",
        "data": {"type": "eight_gaussians", "n": 256},
        "components": {
            "noise": {"type": "standard_normal", "shape": [2]},
            "generator": {"type": "mlp", "in_features": 2, "out_features": 2, "hidden": [16]},
            "critic": {"type": "mlp", "in_features": 2, "out_features": 1, "hidden": [16]},
        },
        "graph": {"z": "noise.sample(x)", "fake": "generator(z)", "unused": "critic(x)"},
        "losses": {"adv": {"type": "toy_adversarial", "critic": "critic", "fake": "fake"}},
        "players": {
            "critic": {"params": ["critic"], "terms": ["adv.critic"], "steps": 2},
            "generator": {"params": ["generator"], "terms": {"adv.generator": 1.0}},
        },
        "train": {"steps": 5, "batch_size": 32},
    }


def errors(spec: dict, catalogue) -> str:
    with pytest.raises(SpecError) as info:
        build(load_spec(spec, catalogue=catalogue), "cpu")
    return str(info.value)


def test_plans_hold_only_ancestors_and_mark_gradient_paths(gan_spec, catalogue) -> None:
    model, _ = build(load_spec(gan_spec, catalogue=catalogue), "cpu")
    critic, generator = model.plans["critic"], model.plans["generator"]
    assert [(s.name, s.grad) for s in critic.values] == [("z", False), ("fake", False)]
    assert [(s.name, s.grad) for s in generator.values] == [("z", False), ("fake", True)]
    assert generator.losses[0].inputs == {"fake": "fake"}  # term_inputs: no real data for the generator
    assert critic.losses[0].terms == {"critic"}
    assert {id(p) for p in critic.params} == {id(p) for p in model.component("critic").parameters()}


def test_critic_step_runs_the_generator_without_autograd(gan_spec, catalogue) -> None:
    model, data = build(load_spec(gan_spec, catalogue=catalogue), "cpu")
    batch = data.train.batch(slice(0, 8))
    seen = {}
    model.component("generator").register_forward_hook(lambda m, i, o: seen.update(grad=o.requires_grad))
    model.player_loss("critic", batch)
    assert seen["grad"] is False
    model.player_loss("generator", batch)
    assert seen["grad"] is True


def test_two_player_training_moves_each_players_parameters(gan_spec, catalogue, tmp_path) -> None:
    from compose_gen.runtime import Run

    run = Run.create(load_spec(gan_spec, catalogue=catalogue), tmp_path / "run", "cpu", progress=False)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    run.trainer.fit(3)
    after = run.model.state_dict()
    assert all(p.requires_grad for p in run.model.parameters())
    for name in ("components.critic.net.0.weight", "components.generator.net.0.weight"):
        assert not torch.equal(before[name], after[name]), name


def test_unknown_graph_name_suggests(gan_spec, catalogue) -> None:
    gan_spec["graph"]["fake"] = "generatr(z)"
    assert "graph.fake: unknown name 'generatr'; did you mean 'generator'?" in errors(gan_spec, catalogue)


def test_labels_read_from_data_that_give_none_are_said_to_be_missing_with_how_data_give_them(gan_spec, catalogue, tmp_path) -> None:
    """A conditional GAN on an image folder without class sub-folders got a bare "unknown name 'y'"."""
    np.savez(tmp_path / "points.npz", x=np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32))
    gan_spec["data"] = {"type": "npz", "path": str(tmp_path / "points.npz")}
    gan_spec["graph"]["c"] = "one_hot(y, 8)"
    assert "graph.c: unknown name 'y' (the data give the fields x and no labels y: an image folder gives them" in errors(gan_spec, catalogue)


def test_unknown_loss_value_suggests(gan_spec, catalogue) -> None:
    gan_spec["losses"]["adv"]["fake"] = "fak"
    assert "losses.adv.fake: unknown value 'fak'; did you mean 'fake'?" in errors(gan_spec, catalogue)


def test_a_metrics_unknown_value_is_found_with_the_spec(gan_spec, catalogue) -> None:
    gan_spec["evaluate"] = {"metrics": [{"type": "value_grid", "values": ["x", "fak"]}]}
    assert "evaluate.metrics[0].values[1]: unknown value 'fak'; did you mean 'fake'?" in errors(gan_spec, catalogue)


def test_cycle_is_found(gan_spec, catalogue) -> None:
    gan_spec["graph"].update({"a": "generator(b)", "b": "generator(a)"})
    message = errors(gan_spec, catalogue)
    assert "cycle:" in message and "a" in message and "b" in message


def test_redefining_a_batch_field_is_named_not_a_cycle(gan_spec, catalogue) -> None:
    gan_spec["graph"]["x"] = "generator(z)"
    message = errors(gan_spec, catalogue)
    assert message == "<dict>:1: graph.x: 'x' is a batch field (the data gives x, y) and cannot be redefined; give this value another name"
    with pytest.raises(SpecError) as info:
        build(load_spec(gan_spec, ["graph.x=noise.sample(y)"], catalogue), "cpu")
    assert str(info.value) == "--set: graph.x: 'x' is a batch field (the data gives x, y) and cannot be redefined; give this value another name"


def test_method_a_component_does_not_offer(gan_spec, catalogue) -> None:
    gan_spec["graph"]["z"] = "noise.explode(x)"
    assert "graph.z: 'noise' offers no graph method 'explode' (it offers: sample, rsample)" in errors(gan_spec, catalogue)


def test_tensor_used_as_a_distribution_is_found_by_the_dry_run(gan_spec, catalogue) -> None:
    gan_spec["graph"].update({"zz": "z.rsample()", "fake": "generator(zz)"})
    message = errors(gan_spec, catalogue)
    assert "graph.zz: dry run failed computing value 'zz'" in message
    assert "'z' is a Tensor" in message


def test_shape_mismatch_names_the_component(gan_spec, catalogue) -> None:
    gan_spec["components"]["critic"]["in_features"] = 3
    message = errors(gan_spec, catalogue)
    assert "components.critic: type 'mlp' (plugin 'networks') dry run failed" in message
    assert "(in component 'critic')" in message and "mlp expects inputs of shape (..., 3), got (5, 2)" in message


def test_unknown_term_and_ambiguous_term(gan_spec, catalogue) -> None:
    spec = copy.deepcopy(gan_spec)
    spec["players"]["critic"]["terms"] = ["adv.critc"]
    assert "players.critic.terms.adv.critc: unknown loss term 'adv.critc'; did you mean 'adv.critic'?" in errors(spec, catalogue)
    gan_spec["players"]["critic"]["terms"] = ["adv"]
    assert "name one of adv.critic, adv.generator" in errors(gan_spec, catalogue)


def test_a_single_term_loss_is_named_by_its_loss_whatever_its_term_is_called(gan_spec, catalogue) -> None:
    gan_spec["losses"]["gp"] = {"type": "gradient_penalty", "critic": "critic", "real": "x", "fake": "fake"}
    gan_spec["players"]["critic"]["terms"] = ["adv.critic", "gp"]  # gradient_penalty's one term is `critic`
    model, _ = build(load_spec(gan_spec, catalogue=catalogue), "cpu")
    assert {call.name: set(call.terms) for call in model.plans["critic"].losses} == {"adv": {"critic"}, "gp": {"critic"}}


def test_player_whose_terms_ignore_its_parameters(gan_spec, catalogue) -> None:
    gan_spec["losses"]["real_only"] = {"type": "toy_adversarial", "critic": "critic", "fake": "x"}
    gan_spec["players"]["generator"]["terms"] = ["real_only.generator"]
    message = errors(gan_spec, catalogue)
    assert "players.generator: none of the terms of player 'generator' depends on its parameters" in message
    gan_spec["players"]["generator"]["params"] = ["noise"]
    assert "players.generator: player 'generator' has no parameters" in errors(gan_spec, catalogue)


def test_dry_run_leaves_no_trace(gan_spec, catalogue) -> None:
    spec = load_spec(gan_spec, catalogue=catalogue)
    model, data = build(spec, "cpu")
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    from compose_gen.compiler.dry_run import dry_run

    dry_run(model, data)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_same_seed_same_model(gan_spec, catalogue) -> None:
    spec = load_spec(gan_spec, catalogue=catalogue)
    a, data = build(spec, "cpu")
    b = compile_spec(spec, data)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_a_component_named_like_a_batch_field_is_refused_not_silently_shadowing_it(gan_spec, catalogue) -> None:
    gan_spec["components"]["y"] = gan_spec["components"].pop("noise")
    gan_spec["graph"] = {k: v.replace("noise.", "y.") for k, v in gan_spec["graph"].items()}
    message = errors(gan_spec, catalogue)
    assert "components.y: 'y' is a batch field (the data gives x, y) and cannot be redefined; give this component another name" in message


def test_a_sampler_or_metric_that_names_a_loss_hangs_below_it_in_the_graph(catalogue) -> None:
    """``latent_model``'s and the latent metrics' ``model: cvae`` are edges, so ``compose-gen graph`` shows what they read."""
    from pathlib import Path

    from compose_gen.compiler import build_graph

    spec = load_spec(Path(__file__).parents[2] / "specs" / "cvae_digits.yaml", catalogue=catalogue)
    graph = build_graph(spec, ("x", "y")).graph
    assert graph.has_edge("loss:cvae", "sampler")
    assert graph.has_edge("loss:cvae", "metric:importance_sampled_nll[1]")
    assert "metric:test_losses[0]" not in graph, "a metric that reads nothing from the graph is not drawn"


def test_both_sides_of_a_game_on_the_same_parameters_are_refused(gan_spec, catalogue) -> None:
    """adv.critic + adv.generator on one parameter is −D(real) for the generator: its gradient is zero, silently."""
    game = gan_spec.pop("players")
    assert "losses.adv: adv.critic and adv.generator oppose each other, but the parameters of generator and critic are trained on both (player model)" in errors(gan_spec, catalogue)
    game["critic"]["params"] = ["critic", "generator"]
    gan_spec["players"] = game
    assert "players: adv.critic and adv.generator oppose each other, but the parameters of generator are trained on both (players critic and generator)" in errors(gan_spec, catalogue)
    from pathlib import Path

    vaegan = load_spec(Path(__file__).parents[2] / "specs" / "vaegan_digits.yaml", ["players.critic.params=[critic, encoder, decoder]"], catalogue=catalogue)
    with pytest.raises(SpecError, match="but the parameters of encoder and decoder are trained on both"):  # not their nets again
        build(vaegan, "cpu")



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
def test_a_game_with_its_sides_on_the_wrong_players_is_refused(gan_spec, catalogue, players: dict, messages: list[str]) -> None:
    gan_spec["players"] = players
    found = errors(gan_spec, catalogue)
    assert all(message in found for message in messages), found


def test_a_term_or_component_its_player_cannot_train_is_refused(gan_spec, catalogue) -> None:
    """Autograd decides: a gradient penalty detaches the generator's samples, so it trains the critic only."""
    gan_spec["losses"]["gp"] = {"type": "gradient_penalty", "critic": "critic", "real": "x", "fake": "fake"}
    gan_spec["players"]["generator"]["terms"] = ["adv.generator", "gp"]
    assert "players.generator.terms: gp.critic has no gradient path to the parameters of player 'generator'" in errors(gan_spec, catalogue)
    gan_spec["players"]["generator"]["terms"] = ["adv.generator"]
    gan_spec["components"]["encoder"] = {"type": "mlp", "in_features": 2, "out_features": 2, "hidden": [4]}
    gan_spec["players"]["generator"]["params"] = ["generator", "encoder"]  # nothing the generator's terms read uses it
    assert (
        "players.generator.params[1]: none of the terms of player 'generator' (adv.generator) has a gradient path to 'encoder', "
        "so its parameters would never train"
    ) in errors(gan_spec, catalogue)

def test_a_spec_without_losses_is_told_so(gan_spec, catalogue) -> None:
    del gan_spec["losses"], gan_spec["players"]
    assert "losses: the spec has no losses, so there is nothing to train" in errors(gan_spec, catalogue)


def test_the_fields_a_spec_reads_are_what_it_uses_as_data_but_never_defines(gan_spec, catalogue) -> None:
    """Arguments, method targets and loss values that no component or graph value defines; not a plain call's target."""
    gan_spec["graph"].update(labels="one_hot(y, 10)", frozen="w.detach()", typo="generatr(z)")
    gan_spec["losses"]["adv"]["real"] = "real_x"
    assert assumed_fields(load_spec(gan_spec, catalogue=catalogue)) == ("real_x", "w", "x", "y")


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        ({"fake": "generatr(z)"}, "graph.fake: unknown name 'generatr'; did you mean 'generator'?"),
        ({"a": "generator(b)", "b": "generator(a)"}, "cycle: "),
        ({"c": "one_hot(y)"}, "graph.c: one_hot(y) does not fit"),
    ],
)
def test_the_graph_is_checked_without_the_data_with_the_fields_assumed(gan_spec, catalogue, graph: dict, message: str) -> None:
    gan_spec["graph"].update(graph)
    spec = load_spec(gan_spec, catalogue=catalogue)  # the spec alone does not see the graph's mistakes
    with pytest.raises(SpecError, match=re.escape(message)):
        build_graph(spec, assumed_fields(spec))
