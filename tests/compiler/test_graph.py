"""The spec graph: unknown names, cycles, shadowed fields, the fields a spec reads, checked with or without data."""

from __future__ import annotations

import re

import numpy as np
import pytest

from compose_gen.compiler import assumed_fields, build_graph
from compose_gen.runtime import build
from compose_gen.spec import SpecError, load_spec
from game_toys import ToyAdversarial, ToyAdversarialParams, errors

from compose_gen import ComponentType, Value, make_catalogue
from compose_gen.testing.plugins import plugin


def test_unknown_graph_name_suggests(gan_spec, toy_catalogue) -> None:
    gan_spec["graph"]["fake"] = "generatr(z)"
    assert "graph.fake: unknown name 'generatr'; did you mean 'generator'?" in errors(gan_spec, toy_catalogue)


def test_a_component_given_as_an_argument_is_said_to_be_no_value(gan_spec, toy_catalogue) -> None:
    """It failed in the dry run as a bare KeyError: 'generator'."""
    gan_spec["graph"]["fake"] = "generator(generator)"
    assert (
        "graph.fake: 'generator' is a component, not a value: a call's arguments are graph values, batch fields or numbers "
        "(to pass its output, compute a value as generator(...) and name that)"
    ) in errors(gan_spec, toy_catalogue)


@pytest.mark.parametrize(("text", "kind"), [("x(x)", "a batch field"), ("z(x)", "a graph value")])
def test_a_batch_field_or_value_called_as_a_component_is_said_to_be_none(gan_spec, toy_catalogue, text, kind) -> None:
    """It was a KeyError traceback out of validate, which then checked no further file; --static said ok."""
    gan_spec["graph"]["fake"] = text
    name = text.split("(")[0]
    assert (
        f"graph.fake: {name!r} is {kind}, not a component: only components and the builtins cat, detach, one_hot are called "
        f"(a value's methods as {name}.method(...))"
    ) in errors(gan_spec, toy_catalogue)


def test_a_graph_that_draws_more_than_max_draws_at_once_is_refused(gan_spec, toy_catalogue) -> None:
    """noise.sample(1000000000) ran validate past 12 GB; `compose-gen sample -n` may draw more, in batches."""
    gan_spec["graph"]["z"] = "noise.sample(1000001)"
    assert "graph.z: noise.sample(1000001) draws more than 1,000,000 samples (MAX_DRAWS) at once" in errors(gan_spec, toy_catalogue)
    gan_spec["graph"]["z"] = "noise.sample(1e9)"  # a distribution value's sample(1e9) drew 10**9: a count written as a float
    assert "graph.z: noise.sample(1000000000.0) draws more than 1,000,000 samples (MAX_DRAWS) at once" in errors(gan_spec, toy_catalogue)
    gan_spec["graph"]["z"] = "noise.sample(x, 2000000.0)"  # a temperature, not a count: it builds
    build(load_spec(gan_spec, catalogue=toy_catalogue), "cpu")


def test_labels_read_from_data_that_give_none_are_said_to_be_missing_with_how_data_give_them(gan_spec, toy_catalogue, tmp_path) -> None:
    """A conditional GAN on an image folder without class sub-folders got a bare "unknown name 'y'"."""
    np.savez(tmp_path / "points.npz", x=np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32))
    gan_spec["data"] = {"type": "npz", "path": str(tmp_path / "points.npz")}
    gan_spec["graph"]["c"] = "one_hot(y, 8)"
    assert "graph.c: unknown name 'y' (the data give the fields x and no labels y: an image folder gives them" in errors(gan_spec, toy_catalogue)


def test_unknown_loss_value_suggests(gan_spec, toy_catalogue) -> None:
    gan_spec["losses"]["adv"]["fake"] = "fak"
    assert "losses.adv.fake: unknown value 'fak'; did you mean 'fake'?" in errors(gan_spec, toy_catalogue)


def test_a_component_or_loss_named_where_a_value_is_wanted_is_said_to_be_one(gan_spec, toy_catalogue) -> None:
    """It was "unknown value 'generator'", though the spec defines it, as a component."""
    gan_spec["losses"]["adv"]["fake"] = "generator"
    assert "losses.adv.fake: 'generator' is a component, not a value: to pass its output, compute a value as generator(...)" in errors(gan_spec, toy_catalogue)
    gan_spec["losses"]["adv"]["fake"] = "adv"
    assert "losses.adv.fake: 'adv' is a loss, not a value: name a graph value or batch field (fake, unused, x, y, z)" in errors(gan_spec, toy_catalogue)


def test_a_metrics_unknown_value_is_found_with_the_spec(gan_spec, toy_catalogue) -> None:
    gan_spec["evaluate"] = {"metrics": [{"type": "value_grid", "values": ["x", "fak"]}]}
    assert "evaluate.metrics[0].values[1]: unknown value 'fak'; did you mean 'fake'?" in errors(gan_spec, toy_catalogue)


def test_cycle_is_found(gan_spec, toy_catalogue) -> None:
    gan_spec["graph"].update({"a": "generator(b)", "b": "generator(a)"})
    message = errors(gan_spec, toy_catalogue)
    assert "cycle:" in message and "a" in message and "b" in message


def test_redefining_a_batch_field_is_named_not_a_cycle(gan_spec, toy_catalogue) -> None:
    gan_spec["graph"]["x"] = "generator(z)"
    message = errors(gan_spec, toy_catalogue)
    assert message == "<dict>:1: graph.x: 'x' is a batch field (the data gives x, y) and cannot be redefined; give this value another name"
    with pytest.raises(SpecError) as info:
        build(load_spec(gan_spec, ["graph.x=noise.sample(y)"], toy_catalogue), "cpu")
    assert str(info.value) == "--set: graph.x: 'x' is a batch field (the data gives x, y) and cannot be redefined; give this value another name"


def test_method_a_component_does_not_offer(gan_spec, toy_catalogue) -> None:
    gan_spec["graph"]["z"] = "noise.explode(x)"
    assert "graph.z: 'noise' offers no graph method 'explode' (it offers: sample, rsample)" in errors(gan_spec, toy_catalogue)


def test_a_component_named_like_a_batch_field_is_refused_not_silently_shadowing_it(gan_spec, toy_catalogue) -> None:
    gan_spec["components"]["y"] = gan_spec["components"].pop("noise")
    gan_spec["graph"] = {k: v.replace("noise.", "y.") for k, v in gan_spec["graph"].items()}
    message = errors(gan_spec, toy_catalogue)
    assert "components.y: 'y' is a batch field (the data gives x, y) and cannot be redefined; give this component another name" in message


def test_a_sampler_or_metric_that_names_a_loss_hangs_below_it_in_the_graph(toy_catalogue) -> None:
    """``latent_model``'s and the latent metrics' ``model: cvae`` are edges, so ``compose-gen graph`` shows what they read."""
    from pathlib import Path

    from compose_gen.compiler import build_graph

    spec = load_spec(Path(__file__).parents[2] / "specs" / "cvae_digits.yaml", catalogue=toy_catalogue)
    graph = build_graph(spec, ("x", "y")).graph
    assert graph.has_edge("loss:cvae", "sampler")
    assert graph.has_edge("loss:cvae", "metric:importance_sampled_nll[1]")
    assert "metric:test_losses[0]" not in graph, "a metric that reads nothing from the graph is not drawn"


def test_the_fields_a_spec_reads_are_what_it_uses_as_data_but_never_defines(gan_spec, toy_catalogue) -> None:
    """Arguments, method targets and loss values that no component or graph value defines; not a plain call's target."""
    gan_spec["graph"].update(labels="one_hot(y, 10)", frozen="w.detach()", typo="generatr(z)")
    gan_spec["losses"]["adv"]["real"] = "real_x"
    assert assumed_fields(load_spec(gan_spec, catalogue=toy_catalogue)) == ("real_x", "w", "x", "y")


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        ({"fake": "generatr(z)"}, "graph.fake: unknown name 'generatr'; did you mean 'generator'?"),
        ({"a": "generator(b)", "b": "generator(a)"}, "cycle: "),
        ({"c": "one_hot(y)"}, "graph.c: one_hot(y) does not fit"),
    ],
)
def test_the_graph_is_checked_without_the_data_with_the_fields_assumed(gan_spec, toy_catalogue, graph: dict, message: str) -> None:
    gan_spec["graph"].update(graph)
    spec = load_spec(gan_spec, catalogue=toy_catalogue)  # the spec alone does not see the graph's mistakes
    with pytest.raises(SpecError, match=re.escape(message)):
        build_graph(spec, assumed_fields(spec))


class DefaultsToData(ToyAdversarialParams):
    real: Value = "data"  # a plugin's default that names no value of this spec


def test_an_unknown_value_a_plugin_defaults_to_is_said_to_be_its_default(gan_spec) -> None:
    """The spec never wrote 'data'; an error reading as if it had sent its author looking for a typo they did not make."""
    catalogue = make_catalogue([plugin(ComponentType("defaults_to_data", "loss", DefaultsToData, lambda p, ctx: ToyAdversarial(ctx.component(p.critic))))])
    gan_spec["losses"]["adv"]["type"] = "defaults_to_data"
    assert "losses.adv.real: unknown value 'data' (type 'defaults_to_data' defaults real to it: set real)" in errors(gan_spec, catalogue)
    gan_spec["losses"]["adv"]["real"] = "data"  # written in the spec: the usual message
    assert "losses.adv.real: unknown value 'data' (graph values and batch fields: " in errors(gan_spec, catalogue)
