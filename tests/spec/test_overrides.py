"""Command-line overrides: list indices, blame on ``--set``, and changing a section's type."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from compose_gen.spec import SpecError, load_spec
from compose_gen.spec.overrides import parse_key
from compose_gen.spec.source import parse_text

SPECS = Path(__file__).parents[2] / "specs"

FLOW = """\
name: flow
data: {type: moons, n: 64}
components:
  flow:
    type: flow
    base: {type: standard_normal, shape: [2]}
    bijectors:
      - {type: affine_coupling, shape: [2], hidden: [8]}
      - {type: affine_coupling, shape: [2]}
losses:
  nll: {type: flow_nll, flow: flow}
train: {steps: 2, batch_size: 16, optimizer: {type: adam, lr: 1e-3}}
"""


@pytest.fixture
def flow():
    return parse_text(FLOW, "base.yaml")


def problems(source, catalogue, overrides) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(source, overrides, catalogue)
    return str(info.value).splitlines()


@pytest.mark.parametrize(
    "key, path",
    [
        ("train.steps", ("train", "steps")),
        ("components.flow.bijectors[0].hidden", ("components", "flow", "bijectors", 0, "hidden")),
        ("a[1][2].b", ("a", 1, 2, "b")),
        ("components.flow.bijectors.0.hidden", ("components", "flow", "bijectors", "0", "hidden")),
        ('players.critic.terms."gp.critic"', ("players", "critic", "terms", "gp.critic")),
        ("x.'a.b'[1].c", ("x", "a.b", 1, "c")),
    ],
)
def test_keys_parse_with_either_index_syntax(key, path) -> None:
    assert parse_key(key) == path


@pytest.mark.parametrize("key", ["a..b", "a[-1]", "a[0", "a]", "[0]", "", "a.", ".a", 'a.""', 'a."b', 'a"b"'])
def test_malformed_keys_are_refused(key) -> None:
    assert parse_key(key) is None


def test_a_key_holding_a_dot_is_quoted(catalogue) -> None:
    """A player's term weights are keyed by ``loss.term``: quoted, the key is one segment, not two."""
    weights = ["players.critic.terms={adv.critic: 1.0, gp.critic: 1.0}", 'players.critic.terms."gp.critic"=5']
    spec = load_spec(SPECS / "wgan_gp_8gaussians.yaml", weights, catalogue)
    assert spec.model.players["critic"].weights() == {"adv.critic": 1.0, "gp.critic": 5}


def test_a_key_holding_a_dot_written_unquoted_is_refused_with_the_quoted_form(catalogue) -> None:
    """Unquoted, ``gp.critic`` would create a mapping ``gp`` beside the weight it meant to set."""
    weights = ["players.critic.terms={adv.critic: 1.0, gp.critic: 1.0}", "players.critic.terms.gp.critic=5"]
    with pytest.raises(SpecError) as info:
        load_spec(SPECS / "wgan_gp_8gaussians.yaml", weights, catalogue)
    assert str(info.value) == (
        "--set: players.critic.terms.gp.critic: players.critic.terms has the key 'gp.critic', which holds a dot: "
        "quote it, --set 'players.critic.terms.\"gp.critic\"=...'"
    )


@pytest.mark.parametrize("key", ["components.flow.bijectors[1].hidden", "components.flow.bijectors.1.hidden"])
def test_a_list_entry_is_set_by_index(flow, catalogue, key) -> None:
    spec = load_spec(flow, [f"{key}=[4]"], catalogue)
    assert spec.sections.components["flow.bijectors[1]"].params.hidden == [4]
    assert spec.sections.components["flow.bijectors[0]"].params.hidden == [8]
    assert spec.source.overridden == {("components", "flow", "bijectors", 1, "hidden")}


@pytest.mark.parametrize("key", ["components.flow.bijectors[0].hidden", "components.flow.bijectors.0.hidden"])
def test_a_bad_value_set_in_a_list_entry_is_blamed_on_the_override(flow, catalogue, key) -> None:
    assert problems(flow, catalogue, [f"{key}=four"]) == [
        "--set: components.flow.bijectors[0].hidden: Input should be a valid list",
    ]


def test_a_replaced_entry_is_blamed_on_the_override_below_it_too(flow, catalogue) -> None:
    lines = problems(flow, catalogue, ["components.flow.bijectors[0]={type: affine_coupling, shape: [2], hidden: x}"])
    assert lines == ["--set: components.flow.bijectors[0].hidden: Input should be a valid list"]


def test_a_mapping_created_by_an_override_is_blamed_on_it(flow, catalogue) -> None:
    assert problems(flow, catalogue, ["train.ema.decay=0.5"]) == ["--set: train.ema.components: required key is missing"]


def test_a_problem_with_a_part_one_of_whose_values_was_set_names_the_line_and_the_override(flow, catalogue) -> None:
    """The build refuses the bijector as a whole, after an override set one of its values: neither alone is the place."""
    from compose_gen.runtime import build

    with pytest.raises(SpecError) as info:
        build(load_spec(flow, ["components.flow.bijectors[1].shape=[3]"], catalogue), "cpu")
    assert str(info.value).startswith("base.yaml:4 with --set: components.flow: type 'flow' (plugin 'flows') failed to build")


def test_a_key_another_type_does_not_take_names_the_override_that_changed_the_type(flow, catalogue) -> None:
    """``--set train.optimizer.type=sgd`` beside the file's ``betas``: the file's line alone blamed a key the user wrote
    correctly, for the type it was written for."""
    source = parse_text(FLOW.replace("optimizer: {type: adam, lr: 1e-3}", "optimizer: {type: adam, lr: 1e-3, betas: [0.5, 0.9]}"), "base.yaml")
    assert problems(source, catalogue, ["train.optimizer.type=sgd"]) == ["base.yaml:12 with --set: train.optimizer.betas: unknown key 'betas'"]


def test_a_key_one_typo_from_an_existing_one_is_not_created(flow, catalogue) -> None:
    """``components.flw.repeat=2`` would make a component without a type and report that; the typo is the problem."""
    assert problems(flow, catalogue, ["components.flw.repeat=2"]) == [
        "--set: components.flw.repeat: components has no entry 'flw' (it has 'flow'); did you mean 'flow'?; "
        "a new entry is set whole, not key by key: --set 'components.flw={type: ...}'"
    ]


def test_a_key_one_typo_from_an_existing_one_outside_named_sections_is_not_created(flow, catalogue) -> None:
    assert problems(flow, catalogue, ["train.optimizr.lr=1"]) == [
        "--set: train.optimizr.lr: train.optimizr does not exist; did you mean 'optimizer'? (to add it, set it whole: train.optimizr={...})"
    ]


@pytest.mark.parametrize("name", ["D", "dd"])
def test_a_new_named_entry_is_not_created_key_by_key(flow, catalogue, name) -> None:
    """``players.D.steps=2`` (D a component) would make a partial player and an error that blames the spec."""
    data = yaml.safe_load(FLOW)
    data["players"] = {"model": {"params": ["flow"]}}
    assert problems(data, catalogue, [f"players.{name}.steps=2"]) == [
        f"--set: players.{name}.steps: players has no entry '{name}' (it has 'model'); "
        f"a new entry is set whole, not key by key: --set 'players.{name}={{params: [...], terms: [...]}}'"
    ]


def test_a_new_named_entry_set_whole_can_then_be_set_key_by_key(flow, catalogue) -> None:
    spec = load_spec(flow, ["players.model={params: [flow], terms: [nll]}", "players.model.steps=2", "losses.nll.flow=flow"], catalogue)
    assert spec.model.players["model"].steps == 2


@pytest.mark.parametrize(
    "override, message",
    [
        ("components.flow.bijectors.5.hidden=[4]", "components.flow.bijectors.5.hidden: index 5 out of range (components.flow.bijectors has 2 entries)"),
        ("components.flow.bijectors[2]={type: actnorm}", "components.flow.bijectors[2]: index 2 out of range (components.flow.bijectors has 2 entries)"),
        (
            "components.flow.bijectors.first.hidden=[4]",
            "components.flow.bijectors.first.hidden: components.flow.bijectors is a list: "
            "choose an entry by index, as in components.flow.bijectors[0], not 'first'",
        ),
        ("components.flow.base[0]=1", "components.flow.base[0]: components.flow.base is a mapping, not a list: it has no entry [0]"),
        ("train.steps[0]=1", "train.steps[0]: train.steps is int 2, not a list: it has no entry [0]"),
        ("train.steps.x=1", "train.steps.x: cannot set a key inside train.steps, which is int 2, not a mapping"),
        ("train.ema.components[0]=flow", "train.ema.components[0]: train.ema.components does not exist: set the whole list (train.ema.components=[...])"),
        ("train.steps=5\nseed: 3", "train.steps: override value '5\\nseed: 3' holds more than one value; set each key with a --set of its own"),
        ("train.steps=", "train.steps: no value after '=': give one (null for none)"),
        (
            "train.optimizer={type:adam, lr: 0.1}",
            "train.optimizer: 'type:adam' reads as one key: in YAML a colon needs a space after it (type: adam)",
        ),
        (
            "a[-1]=2",
            "override 'a[-1]=2' is not of the form key.path=value "
            '(list entries: name[0] or name.0; a key with a dot: "a.b")',
        ),
    ],
)
def test_overrides_that_cannot_apply_name_the_reason(flow, catalogue, override, message) -> None:
    assert problems(flow, catalogue, [override]) == [f"--set: {message}"]


def test_changing_the_optimizer_type_drops_the_old_types_defaults(flow, catalogue) -> None:
    resolved = load_spec(flow, catalogue=catalogue).to_yaml()
    assert "amsgrad: false" in resolved  # a run folder's spec.yaml writes every default
    spec = load_spec(parse_text(resolved, "run/spec.yaml"), ["train.optimizer.type=sgd", "train.optimizer.momentum=0.9"], catalogue)
    assert spec.model.train.optimizer.model_dump() == {"type": "sgd", "lr": 1e-3, "momentum": 0.9, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0}


def test_a_parameter_of_the_old_type_set_by_the_user_stays_and_is_reported(flow, catalogue) -> None:
    resolved = load_spec(flow, ["train.optimizer.betas=[0.5, 0.9]"], catalogue).to_yaml()
    betas = next(i for i, line in enumerate(resolved.splitlines(), 1) if "betas:" in line)
    assert problems(parse_text(resolved, "run/spec.yaml"), catalogue, ["train.optimizer.type=sgd"]) == [
        f"run/spec.yaml:{betas} with --set: train.optimizer.betas: unknown key 'betas'",
    ]


def test_changing_a_schedule_type_drops_the_old_types_defaults(flow, catalogue) -> None:
    data = yaml.safe_load(FLOW)
    data["players"] = {"model": {"schedule": {"type": "cosine", "warmup": 5, "min_factor": 0.0}}}
    spec = load_spec(data, ["players.model.schedule.type=exponential", "players.model.schedule.gamma=0.9"], catalogue)
    assert spec.model.players["model"].schedule.model_dump() == {"type": "exponential", "warmup": 5, "gamma": 0.9}


def test_changing_a_component_type_drops_the_old_types_defaults(flow, catalogue) -> None:
    resolved = load_spec(flow, catalogue=catalogue).to_yaml()
    spec = load_spec(parse_text(resolved, "run/spec.yaml"), ["components.flow.bijectors[1].type=actnorm"], catalogue)
    assert spec.sections.components["flow.bijectors[1]"].type.name == "actnorm"
    hidden = next(i for i, line in enumerate(resolved.splitlines(), 1) if "- 8" in line) - 1
    assert problems(parse_text(resolved, "run/spec.yaml"), catalogue, ["components.flow.bijectors[0].type=actnorm"]) == [
        f"run/spec.yaml:{hidden} with --set: components.flow.bijectors[0].hidden: unknown parameter 'hidden'",
    ]


def test_an_unparsable_override_value_names_no_column_of_text_it_did_not_write(flow, catalogue) -> None:
    """YAML errors say their column; an override's value is parsed as `value: RAW`, whose column is not the user's."""
    assert problems(flow, catalogue, ["train.steps=[1"]) == [
        "--set: train.steps: cannot parse override value '[1': invalid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence)"
    ]


def test_a_key_is_set_inside_a_metric_or_transform_given_by_its_name_alone(catalogue) -> None:
    """`metrics: [test_losses]` is {type: test_losses}, but --set 'evaluate.metrics[0].batch_size=5' was refused:
    "cannot set a key inside evaluate.metrics[0], which is str 'test_losses', not a mapping"."""
    text = FLOW.replace("data: {type: moons, n: 64}", "data: {type: moons, n: 64, transforms: [standardise, {type: scale, a: 2}]}")
    text += "evaluate: {metrics: [test_losses]}\n"
    spec = load_spec(
        parse_text(text, "base.yaml"),
        ["evaluate.metrics[0].type=density_plot", "evaluate.metrics[0].flow=flow", "data.transforms[0].type=scale", "data.transforms[0].a=3"],
        catalogue,
    )
    resolved = spec.to_dict()
    assert resolved["evaluate"]["metrics"][0]["type"] == "density_plot" and resolved["evaluate"]["metrics"][0]["flow"] == "flow"
    assert resolved["data"]["transforms"][0] == {"type": "scale", "a": 3.0, "b": 0.0}
