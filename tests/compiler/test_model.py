"""The compiled model: sampling by class, checks of the whole model, the same seed giving the same model, two players training."""

from __future__ import annotations

import pytest
import torch

import compose_gen as cg
from compose_gen.compiler import SamplingFailed, compile_spec
from compose_gen.runtime import build
from compose_gen.spec import load_spec
from compose_gen.testing.plugins import plugin


@pytest.fixture
def conditional_generator(catalogue, cgan_spec):
    """An untrained class-conditional generator (the weights do not matter here)."""
    return cg.build(cg.load_spec(cgan_spec, catalogue=catalogue), "cpu")[0]


def drawn(model, n: int, classes=None) -> torch.Tensor:
    torch.manual_seed(0)  # the same noise for every call: only the classes differ
    with torch.no_grad():
        return model.sample(n, classes=classes)


def test_example_i_is_drawn_for_class_i_mod_classes_by_default(conditional_generator) -> None:
    assert torch.equal(conditional_generator.labels(10), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 0, 1]))


def test_chosen_classes_are_drawn_in_turn_and_reach_the_generator(conditional_generator) -> None:
    """With the noise fixed, example i of ``classes=[3, 5]`` equals the default draw's example of the same class."""
    assert torch.equal(conditional_generator.labels(5, [3, 5]), torch.tensor([3, 5, 3, 5, 3]))
    every_class = drawn(conditional_generator, 8)
    threes = drawn(conditional_generator, 8, [3])
    assert torch.equal(threes[3], every_class[3])
    assert not torch.isclose(threes, every_class).all(-1)[[0, 1, 2, 4, 5, 6, 7]].any(), "the other examples changed class"
    twice = drawn(conditional_generator, 8, [3])
    assert torch.equal(twice, threes)


@pytest.mark.parametrize("classes, message", [([8], "class 8 given"), ([-1, 9], "class -1, 9 given"), ([], "no class given")])
def test_classes_the_model_does_not_have_are_refused(conditional_generator, classes, message) -> None:
    with pytest.raises(ValueError, match=f"spec 'cgan' samples classes 0..7; {message}"):
        conditional_generator.sample(4, classes=classes)


def test_a_model_that_does_not_sample_by_class_refuses_chosen_classes(catalogue, vae_spec) -> None:
    model = cg.build(cg.load_spec(vae_spec, catalogue=catalogue), "cpu")[0]
    assert model.labels(4) is None
    with pytest.raises(ValueError, match="spec 'tiny_vae' does not sample by class"):
        model.sample(4, classes=[1])


def test_averaging_a_component_without_parameters_is_refused_at_build(catalogue, vae_spec) -> None:
    vae_spec["train"]["ema"] = {"components": ["encoder", "prior"]}
    with pytest.raises(cg.SpecError, match=r"train\.ema\.components: prior hold\(s\) no parameters to average"):
        cg.build(cg.load_spec(vae_spec, catalogue=catalogue))
    vae_spec["train"]["ema"] = {"components": ["encoder"]}
    cg.build(cg.load_spec(vae_spec, catalogue=catalogue))


def test_a_batch_from_numpy_in_float64_is_evaluated_in_the_models_precision(catalogue, vae_spec) -> None:
    """numpy's float64 rows, as a user reads them, give what the float32 batch gives."""
    model, data = cg.build(cg.load_spec(vae_spec, catalogue=catalogue), "cpu")
    x = data.test.batch(slice(0, 8))["x"]
    torch.manual_seed(0)
    expected = model.evaluate_terms({"x": x})
    torch.manual_seed(0)
    from_numpy = model.evaluate_terms({"x": x.double().numpy()})
    assert expected.keys() == from_numpy.keys()
    for key, value in expected.items():
        torch.testing.assert_close(from_numpy[key], value, msg=key)
    assert model.values({"x": x.double().numpy()}, ["x"])["x"].dtype == torch.float32


def test_a_batch_without_a_field_the_losses_read_is_refused_by_name(catalogue, vae_spec) -> None:
    model, _ = cg.build(cg.load_spec(vae_spec, catalogue=catalogue), "cpu")
    with pytest.raises(KeyError, match="spec 'tiny_vae': the batch lacks field\\(s\\) x; its losses read x"):
        model.evaluate_terms({"pixels": torch.zeros(2, 64)})


def test_two_player_training_moves_each_players_parameters(gan_spec, toy_catalogue, tmp_path) -> None:
    from compose_gen.runtime import Run

    run = Run.create(load_spec(gan_spec, catalogue=toy_catalogue), tmp_path / "run", "cpu", progress=False)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    run.trainer.fit(3)
    after = run.model.state_dict()
    assert all(p.requires_grad for p in run.model.parameters())
    for name in ("components.critic.net.0.weight", "components.generator.net.0.weight"):
        assert not torch.equal(before[name], after[name]), name


def test_same_seed_same_model(gan_spec, toy_catalogue) -> None:
    spec = load_spec(gan_spec, catalogue=toy_catalogue)
    a, data = build(spec, "cpu")
    b = compile_spec(spec, data)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


class ShadowsApply(cg.Bijector):
    """A plugin's helper named ``_apply`` hides nn.Module's, which ``.to(device)`` calls on every submodule."""

    def __init__(self) -> None:
        super().__init__((2,))
        self.log_scale = torch.nn.Parameter(torch.zeros(2))

    def _apply(self, x, order):  # type: ignore[override]
        return x

    def forward(self, x, context=None):
        return x * self.log_scale.exp(), self.log_scale.sum().expand(self.batch_shape(x))

    def inverse(self, y, context=None):
        return y / self.log_scale.exp(), -self.log_scale.sum().expand(self.batch_shape(y))


def test_a_component_that_cannot_move_to_the_device_is_named_not_the_one_holding_it() -> None:
    catalogue = cg.make_catalogue([plugin(cg.ComponentType("shadows_apply", "bijector", cg.Params, lambda p, ctx: ShadowsApply()))], entry_points="first-party")
    spec = {
        "name": "unmovable",
        "data": {"type": "moons", "n": 200},
        "components": {"flow": {"type": "flow", "base": {"type": "standard_normal", "shape": [2]}, "bijectors": [{"type": "affine", "shape": [2]}, {"type": "shadows_apply"}]}},
        "losses": {"nll": {"type": "flow_nll", "flow": "flow"}},
    }
    with pytest.raises(cg.SpecError, match=r"components.flow.bijectors\[1\]: type 'shadows_apply' \(plugin '\w+'\) failed to move to cpu: TypeError: .*_apply\(\)"):
        build(load_spec(spec, catalogue=catalogue), "cpu")


def test_an_average_without_warm_up_of_a_data_initialised_component_is_warned_of(recwarn) -> None:
    """actnorm initialises on the first training batch, after the average started: at a constant rate it stays uninitialised."""
    spec = {
        "name": "ema_actnorm",
        "data": {"type": "moons", "n": 200},
        "components": {"flow": {"type": "flow", "base": {"type": "standard_normal", "shape": [2]}, "bijectors": [{"type": "actnorm", "shape": [2]}]}},
        "losses": {"nll": {"type": "flow_nll", "flow": "flow"}},
        "train": {"ema": {"components": ["flow"], "warmup": False}},
    }
    with pytest.warns(cg.SpecWarning, match=r"train.ema.warmup: false, but flow initialise\(s\) from the first training batch"):
        build(load_spec(spec), "cpu")
    spec["train"]["ema"]["warmup"] = True
    recwarn.clear()
    build(load_spec(spec), "cpu")
    assert not [w for w in recwarn if issubclass(w.category, cg.SpecWarning)]


def test_one_hot_of_the_labels_with_too_few_classes_is_refused_when_built(cgan_spec, catalogue) -> None:
    """The dry run's five examples may hold no label past K − 1, so the build passed and training failed on a later batch."""
    cgan_spec["graph"]["c"] = "one_hot(y, 3)"
    with pytest.raises(cg.SpecError, match=r"graph\.c: one_hot\(y, 3\) has room for labels 0\.\.2, but the data's labels y have 8 classes"):
        build(load_spec(cgan_spec, catalogue=catalogue))
    cgan_spec["graph"]["c"] = "one_hot(y, 8)"
    build(load_spec(cgan_spec, catalogue=catalogue))


def test_a_sample_count_torch_cannot_hold_fails_without_torch_s_cpp_backtrace(vae_spec) -> None:
    model, _ = build(load_spec(vae_spec), "cpu")
    with pytest.raises(SamplingFailed, match="raised .* while sampling: ") as caught:
        model.sample(2**63)
    assert "frame #" not in str(caught.value) and "Overflow when unpacking long long" in str(caught.value)


def test_a_losss_inline_critic_is_part_of_the_model_and_of_its_checkpoints(catalogue, tmp_path) -> None:
    """An adversarial loss calls its critic without holding it as a submodule: an inline one was in no state_dict,
    so checkpoints lacked it, a resume restarted it from its built weights and the generator's step left it selected."""
    from compose_gen.runtime import Run

    spec = {
        "name": "inline_critic",
        "data": {"type": "eight_gaussians", "n": 256},
        "components": {"noise": {"type": "standard_normal", "shape": [2]}, "gen": {"type": "mlp_generator", "latent_dim": 2, "hidden": [8]}},
        "graph": {"z": "noise.sample(x)", "fake": "gen(z)"},
        "losses": {"adv": {"type": "hinge", "critic": {"type": "mlp_critic", "hidden": [8]}, "real": "x", "fake": "fake"}},
        "players": {"critic": {"params": ["adv.critic"], "terms": ["adv.critic"]}, "gen": {"params": ["gen"], "terms": ["adv.generator"]}},
        "train": {"steps": 3, "batch_size": 32},
    }
    run = Run.create(load_spec(spec, catalogue=catalogue), tmp_path / "run", "cpu", progress=False)
    critic = run.model.component("adv.critic")
    assert {id(p) for p in critic.parameters()} <= {id(p) for p in run.model.parameters()}
    run.trainer.fit(3)
    trained = {k: v.clone() for k, v in critic.state_dict().items()}
    again = cg.load_run(tmp_path / "run", device="cpu").model.component("adv.critic")
    assert trained.keys() == again.state_dict().keys()
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in trained.items())


def test_a_checkpoint_from_before_inline_parts_were_held_still_loads_and_says_what_it_lacks(catalogue, tmp_path, capsys) -> None:
    """Older checkpoints lack 'unowned.*': sampling and evaluating need no critic, and a resume trains it on from its
    built weights (as such a run always did); an inline part no player trains (a metric's) is no model state at all."""
    import hashlib
    import json

    from safetensors.torch import load_file, save_file

    from compose_gen.runtime import Run
    from compose_gen.runtime.checkpoint import list_checkpoints

    spec = {
        "name": "inline_critic",
        "data": {"type": "digits", "shape": "flat"},
        "components": {"noise": {"type": "standard_normal", "shape": [2]}, "gen": {"type": "mlp_generator", "latent_dim": 2, "hidden": [8]}},
        "graph": {"z": "noise.sample(x)", "fake": "gen(z)"},
        "losses": {"adv": {"type": "hinge", "critic": {"type": "mlp_critic", "hidden": [8]}, "real": "x", "fake": "fake"}},
        "players": {"critic": {"params": ["adv.critic"], "terms": ["adv.critic"]}, "gen": {"params": ["gen"], "terms": ["adv.generator"]}},
        "train": {"steps": 2, "batch_size": 32},
        "sample": {"type": "generator", "noise": "noise", "generator": "gen"},
        "evaluate": {"metrics": [{"type": "noise_interpolation", "noise": {"type": "standard_normal", "shape": [2]}, "generator": "gen"}]},
    }
    run = Run.create(load_spec(spec, catalogue=catalogue), tmp_path / "run", "cpu", progress=False)
    assert not any(name.startswith("unowned.metric") for name in run.model.state_dict()), "a metric's noise is no model state"
    run.trainer.fit(2)
    run.trainer.save()
    (checkpoint,) = list_checkpoints(tmp_path / "run")
    older = {k: v for k, v in load_file(checkpoint / "model.safetensors").items() if not k.startswith("unowned.")}
    older["unowned.metric0:noise.loc"] = torch.zeros(2)  # what a checkpoint held of an untrained inline part for a while
    save_file(older, checkpoint / "model.safetensors")
    state = json.loads((checkpoint / "state.json").read_text())
    state["sha256"]["model.safetensors"] = hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()
    (checkpoint / "state.json").write_text(json.dumps(state))
    loaded = cg.load_run(tmp_path / "run", device="cpu")
    assert loaded.trainer.step == 2 and loaded.sample(4).shape == (4, 64)
    assert "holds no weights for adv.critic (inline parts that checkpoints of earlier compose_gen versions did not save" in capsys.readouterr().err


def test_a_model_without_a_sampler_says_how_to_give_it_one(vae_spec) -> None:
    del vae_spec["sample"]
    model, _ = build(load_spec(vae_spec), "cpu")
    with pytest.raises(RuntimeError, match=r"has no `sample:` section, so the model cannot sample: give it one, to a trained run too \(compose-gen sample RUN --set"):
        model.sample(2)
