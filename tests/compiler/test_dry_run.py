"""The dry run: its batch (the first examples, with the largest label among them), what it finds, and that it leaves no trace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from game_toys import errors
from torch.distributions import Distribution, Independent, Normal

from compose_gen import ComponentType, Params, make_catalogue
from compose_gen.runtime import Trainer, build
from compose_gen.runtime.data import BatchStream
from compose_gen.spec import SpecError, SpecWarning, load_spec
from compose_gen.testing.plugins import plugin


def test_a_label_beyond_num_classes_fails_the_dry_run_wherever_it_sits(tmp_path) -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 20)
    labels[20] = 5  # shuffled to train example 29, far from the first ones, which alone would pass
    np.save(tmp_path / "x.npy", rng.normal(size=(40, 2)).astype(np.float32))
    np.save(tmp_path / "y.npy", labels)
    spec = {
        "name": "cgan_labels",
        "data": {"type": "npy", "path": str(tmp_path / "x.npy"), "y_path": str(tmp_path / "y.npy"), "test_fraction": 0.1},
        "components": {
            "noise": {"type": "standard_normal", "shape": [2]},
            "generator": {"type": "mlp_generator", "latent_dim": 2, "num_classes": 2, "hidden": [8]},
            "critic": {"type": "mlp_critic", "num_classes": 2, "hidden": [8]},
        },
        "graph": {"z": "noise.sample(x)", "fake": "generator(z, y)"},
        "losses": {"adv": {"type": "hinge", "critic": "critic", "real": "x", "fake": "fake", "labels": "y"}},
        "players": {"critic": {"params": ["critic"], "terms": ["adv.critic"]}, "generator": {"params": ["generator"], "terms": ["adv.generator"]}},
        "train": {"steps": 2, "batch_size": 8},
    }
    with pytest.raises(SpecError, match=r"components.generator: type 'mlp_generator' \(plugin 'gan_nets'\) dry run failed .*IndexError: index out of range"):
        build(load_spec(spec), "cpu")
    labels[20] = 0
    np.save(tmp_path / "y.npy", labels)
    build(load_spec(spec), "cpu")


def test_a_loss_that_is_not_finite_before_training_is_found_by_validate() -> None:
    """Unscaled digits are the integers 0..16, where a logit (defined on (0, 1)) is NaN.

    First in the chain, the logit's domain is checked against the data when the loss is built; behind an
    (identity-initialised) affine layer, the dry run finds the NaN and names the layer that made it."""
    spec = {
        "name": "logit_out_of_range",
        "data": {"type": "digits", "shape": "image", "scale": False},
        "components": {
            "flow": {
                "type": "flow",
                "base": {"type": "standard_normal", "shape": [1, 8, 8]},
                "head": [{"type": "logit", "shape": [1, 8, 8]}],
                "bijectors": [{"type": "actnorm", "shape": [1, 8, 8]}],
            }
        },
        "losses": {"nll": {"type": "flow_nll", "flow": "flow"}},
    }
    with pytest.raises(SpecError, match=r"losses.nll: .* flow 'flow' takes values in .* but the train split's 'x' leave it: example 0 holds 8"):
        build(load_spec(spec), "cpu")
    spec["components"]["flow"]["head"].insert(0, {"type": "affine", "shape": [1, 8, 8]})
    with pytest.raises(SpecError, match=r"components.flow.head\[1\]: type 'logit' \(plugin 'flows'\) turned finite inputs into NaN .*a logit needs \(0, 1\)"):
        build(load_spec(spec), "cpu")
    spec["components"]["flow"]["head"].pop()  # without the logit, the same flow is finite
    build(load_spec(spec), "cpu")


def test_a_graph_value_no_player_needs_is_dry_run_too(vae_spec) -> None:
    vae_spec["graph"] = {"q": "encoder(x)", "z": "prior.sample(x)", "bad": "decoder(x)"}  # decoder takes 4 numbers, x has 64
    with pytest.raises(SpecError, match=r"components.decoder.net: type 'mlp' \(plugin 'networks'\) dry run failed computing value 'bad' .*mlp expects inputs of shape \(..., 4\)"):
        build(load_spec(vae_spec), "cpu")


def test_a_loss_a_setting_made_overflow_is_said_to_be_perhaps_the_setting(vae_spec) -> None:
    """β·KL past float32's largest number is inf, not NaN: the setting is the first suspect."""
    vae_spec["losses"]["vae"]["beta"] = 1e40
    with pytest.raises(SpecError, match=r"losses.vae: .* \(vae=inf\) .*: a setting too large for float32 \(it overflows past 3.4e\+38\), a bug"):
        build(load_spec(vae_spec), "cpu")


def test_a_loss_that_logs_what_a_player_of_its_name_logs_is_refused() -> None:
    """A player named `gp` beside a gradient penalty named `gp`: the player's gradient norm replaced the penalty's."""
    spec = yaml.safe_load((Path(__file__).parents[2] / "specs" / "wgan_gp_8gaussians.yaml").read_text())
    spec["players"]["gp"] = spec["players"].pop("critic")
    spec["evaluate"]["metrics"] = []
    with pytest.raises(SpecError, match=r"losses.gp: .* logs gp.grad_norm, as player 'gp' does its grad_norm, and one would overwrite the other"):
        build(load_spec(spec), "cpu")


def test_a_component_no_term_trains_under_the_implicit_player_is_warned_of(vae_spec) -> None:
    """The sampler's own decoder, which no loss uses: its samples would come from the weights it was built with."""
    vae_spec["components"]["decoder2"] = dict(vae_spec["components"]["decoder"])
    vae_spec["sample"]["decoder"] = "decoder2"
    with pytest.warns(SpecWarning, match=r"components.decoder2: type 'bernoulli_decoder' .* has parameters that no loss term has a gradient path to"):
        build(load_spec(vae_spec), "cpu")


def test_every_metric_that_cannot_be_built_is_reported_at_once(vae_spec) -> None:
    vae_spec["evaluate"]["metrics"] = [{"type": "codebook_usage", "model": "vae"}, {"type": "codebook_usage", "model": "vae"}]
    spec = load_spec(vae_spec)  # the loss exists; only its builder can tell that it is no vqvae
    with pytest.raises(SpecError) as info:
        build(spec, "cpu")
    assert [".".join(map(str, p.path)) for p in info.value.problems] == ["evaluate.metrics.0", "evaluate.metrics.1"]
    assert "failed to build: ValueError: loss 'vae' is a VAE, not a vqvae" in str(info.value)


def test_tensor_used_as_a_distribution_is_found_by_the_dry_run(gan_spec, toy_catalogue) -> None:
    gan_spec["graph"].update({"zz": "z.rsample()", "fake": "generator(zz)"})
    message = errors(gan_spec, toy_catalogue)
    assert "graph.zz: dry run failed computing value 'zz'" in message
    assert "'z' is a Tensor" in message


def test_shape_mismatch_names_the_component(gan_spec, toy_catalogue) -> None:
    gan_spec["components"]["critic"]["in_features"] = 3
    message = errors(gan_spec, toy_catalogue)
    assert "components.critic: type 'mlp' (plugin 'networks') dry run failed" in message
    assert "(in component 'critic')" in message and "mlp expects inputs of shape (..., 3), got (5, 2), which ends in (2,)" in message


def test_dry_run_leaves_no_trace(gan_spec, toy_catalogue) -> None:
    spec = load_spec(gan_spec, catalogue=toy_catalogue)
    model, data = build(spec, "cpu")
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    from compose_gen.compiler.dry_run import dry_run

    dry_run(model, data)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


class NegativeScaleParams(Params):
    latent: int


class NegativeScaleDecoder(torch.nn.Module):
    """p(x|z) = N(x; Wz, −1): a scale of the wrong sign, the kind of bug torch.distributions' own checks name."""

    def __init__(self, latent: int) -> None:
        super().__init__()
        self.loc = torch.nn.Linear(latent, 64)

    def forward(self, z: torch.Tensor) -> Independent:
        loc = self.loc(z)
        return Independent(Normal(loc, -torch.ones_like(loc)), 1)


NEGATIVE_SCALE = plugin(
    ComponentType("negative_scale_decoder", "decoder", NegativeScaleParams, lambda p, ctx: NegativeScaleDecoder(p.latent), doc="Toy."),
    name="toy_decoders",
)


@pytest.mark.parametrize("validated_before", [True, False])
def test_the_dry_run_checks_distribution_arguments_even_after_torch_compile_turned_that_off(vae_spec, validated_before) -> None:
    """``torch.compile`` turns torch.distributions' validation off for the process; the dry run turns it on for itself."""
    Distribution.set_default_validate_args(validated_before)  # False: what compiling does (the autouse fixture restores it)
    vae_spec["components"]["decoder"] = {"type": "negative_scale_decoder", "latent": 4}
    with pytest.raises(SpecError, match=r"components.decoder: .* dry run failed .*parameter scale .* to satisfy the constraint GreaterThan"):
        build(load_spec(vae_spec, catalogue=make_catalogue([NEGATIVE_SCALE])), "cpu")
    assert Distribution._validate_args is validated_before


def test_data_dependent_initialisation_happens_on_the_first_training_batch_after_the_dry_run() -> None:
    """The dry run initialises actnorm from its few examples, then loads back the untrained state; the first training
    batch must initialise it again.  A flag that remembered the dry run's "done" once left every actnorm at the identity."""
    spec = load_spec(
        {
            "name": "actnorm",
            "data": {"type": "eight_gaussians", "n": 512},
            "components": {"flow": {"type": "flow", "base": {"type": "standard_normal", "shape": [2]}, "bijectors": [{"type": "actnorm", "shape": [2]}]}},
            "losses": {"nll": {"type": "flow_nll", "flow": "flow"}},
            "train": {"steps": 1, "batch_size": 256},
        }
    )
    model, data = build(spec, "cpu")
    (actnorm,) = [m for m in model.modules() if type(m).__name__ == "ActNorm"]
    assert not actnorm.initialized and torch.equal(actnorm.log_scale.detach(), torch.zeros(2))
    first = next(BatchStream(data.train, 256, spec.model.seed, model.device))["x"]
    Trainer(model, BatchStream(data.train, 256, spec.model.seed, model.device), progress=False).fit(1)
    assert bool(actnorm.initialized.value)
    # one Adam step (lr 1e-3) away from the first batch's statistics
    torch.testing.assert_close(actnorm.log_scale.detach(), first.std(0, unbiased=False).log(), atol=2e-3, rtol=0)


def test_a_count_of_draws_written_in_the_graph_is_not_the_dry_run_s_batch_size() -> None:
    """noise.sample(5) matched the dry run's batch of 5, so validate passed, and training met 16 real examples and 5 fakes."""
    spec = load_spec(Path(__file__).parents[2] / "specs" / "wgan_gp_8gaussians.yaml", ["graph.z=noise.sample(5)"])
    with pytest.raises(SpecError, match=r"losses.gp: .* on a batch of 7 .*real has 7 examples, fake 5"):
        build(spec, "cpu")


def test_the_dry_run_size_is_free_however_many_counts_the_graph_writes() -> None:
    from types import SimpleNamespace

    from compose_gen.compiler.dry_run import _SIZES, _batch_size

    graph = {f"z{n}": f"noise.sample({n})" for n in _SIZES}
    assert _batch_size(SimpleNamespace(model=SimpleNamespace(graph=graph))) == _SIZES[-1] + 2
    assert _batch_size(SimpleNamespace(model=SimpleNamespace(graph={"z": "noise.sample(x, 5)"}))) == 7  # a count anywhere
