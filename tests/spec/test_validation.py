"""Validation against the catalogue: every problem, located, with suggestions."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from compose_gen.core import MAX_DRAWS
from compose_gen.spec import SpecError, format_path, load_spec
from compose_gen.spec.source import parse_text


def problems(spec, catalogue, overrides=()) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(spec, overrides, catalogue)
    return str(info.value).splitlines()


def from_yaml(data: dict) -> object:
    return parse_text(yaml.safe_dump(data, sort_keys=False), "spec.yaml")


def line_of(data: dict, fragment: str, after: str = "") -> int:
    """The line of ``from_yaml(data)`` holding ``fragment`` (the first one after a line holding ``after``)."""
    lines = yaml.safe_dump(data, sort_keys=False).splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    return next(i for i, line in enumerate(lines[start:], start + 1) if fragment in line)


def test_valid_spec_fills_defaults(vae_spec, catalogue) -> None:
    spec = load_spec(vae_spec, catalogue=catalogue)
    encoder = spec.sections.components["encoder"]
    assert encoder.params.latent == 4
    net = spec.sections.components["encoder.net"]
    assert net.inline and net.params.activation == "relu"
    assert spec.model.train.optimizer.type == "adam"


def test_resolved_spec_round_trips(vae_spec, catalogue) -> None:
    spec = load_spec(vae_spec, catalogue=catalogue)
    again = load_spec(spec.to_dict(), catalogue=catalogue)
    assert again.to_dict() == spec.to_dict()
    assert again.to_dict()["components"]["encoder"]["net"]["type"] == "mlp"


def test_unknown_type_suggests_the_closest(vae_spec, catalogue) -> None:
    vae_spec["components"]["prior"]["type"] = "standard_normall"
    (line,) = problems(from_yaml(vae_spec), catalogue)
    assert line.startswith("spec.yaml:")
    assert "components.prior.type: unknown" in line
    assert "did you mean 'standard_normal'?" in line


def test_one_broken_component_is_one_problem_not_every_reference_to_its_section(vae_spec, catalogue) -> None:
    """The section failed the first pass, so it was left out of the second: encoder and decoder, which are fine, were
    then unknown at every reference."""
    assert problems(vae_spec, catalogue, ["components.prior=[1, 2]"]) == ["--set: components.prior: Input should be a valid dictionary"]
    vae_spec["train"]["steps"] = "many"  # another section broken too: its problem is said, and the references still resolve
    assert problems(vae_spec, catalogue, ["components.prior=[1, 2]"]) == [
        "--set: components.prior: Input should be a valid dictionary", "<dict>:1: train.steps: Input should be a valid integer, unable to parse string as an integer"
    ]


def test_a_metric_given_by_name_is_no_problem_when_another_section_is_broken(vae_spec, catalogue) -> None:
    """With the top level invalid (a bad seed), the second pass read `metrics: [test_losses]` raw and said
    'evaluate.metrics[0]: expected a mapping with a `type`, got str' besides the real problem."""
    vae_spec["evaluate"]["metrics"] = ["test_losses"]
    vae_spec["seed"] = "abc"
    assert problems(vae_spec, catalogue) == ["<dict>:1: seed: Input should be a valid integer, unable to parse string as an integer"]
    vae_spec["evaluate"]["metrics"] = ["test_losss"]  # a misspelt name is still found in that pass
    assert any("evaluate.metrics[0].type: unknown metric type 'test_losss'" in line for line in problems(vae_spec, catalogue))


@pytest.mark.parametrize(("name", "kind"), [("c", "a graph value"), ("vae", "a loss")])
def test_a_value_or_loss_named_where_a_component_is_wanted_is_said_to_be_one(vae_spec, catalogue, name, kind) -> None:
    """It was "unknown component 'c'", though the spec defines c, only as another kind of thing."""
    vae_spec["graph"] = {"c": "one_hot(y, 10)"}
    vae_spec["losses"]["vae"]["prior"] = name
    (line,) = problems(vae_spec, catalogue)
    assert f"losses.vae.prior: {name!r} is {kind}, not a component: name a prior or a flow under components:" in line


def test_a_misspelt_type_key_is_pointed_at(vae_spec, catalogue) -> None:
    vae_spec["evaluate"]["metrics"] = [{"typ": "test_losses"}]
    (line,) = problems(vae_spec, catalogue)
    assert "evaluate.metrics[0]: missing `type` (is 'typ' it?): one of the metric types" in line


@pytest.mark.parametrize(("written", "said"), [(["test_losses"], "list ['test_losses']"), (7, "int 7"), (None, "null")])
def test_a_type_that_is_no_name_is_said_to_be_so_not_missing(vae_spec, catalogue, written, said) -> None:
    """It was 'missing `type` (is 'type' it?)', pointing at the key the user had written."""
    vae_spec["evaluate"]["metrics"] = [{"type": written}]
    (line,) = problems(vae_spec, catalogue)
    assert f"evaluate.metrics[0].type: expected a type name, got {said}: one of the metric types" in line


@pytest.mark.parametrize(
    "metric",
    [{"type": "importance_sampled_nll", "model": "vae", "samples": 10**20}, {"type": "frechet_distance", "n": 10**9}, {"type": "mode_coverage", "n": 10**7}],
)
def test_a_metric_asking_for_more_draws_than_any_plan_is_refused_before_training(vae_spec, catalogue, metric) -> None:
    """Accepted, they failed (OverflowError, memory) at the evaluation after training."""
    vae_spec["evaluate"]["metrics"] = [metric]
    (line,) = problems(vae_spec, catalogue)
    assert line.endswith(f": Input should be less than or equal to {MAX_DRAWS}"), line


def test_every_problem_is_reported_with_its_line(vae_spec, catalogue) -> None:
    vae_spec["components"]["encoder"]["latent"] = "four"
    vae_spec["components"]["decoder"]["net"]["hiden"] = [3]
    vae_spec["losses"]["vae"]["prior"] = "priorr"
    lines = problems(from_yaml(vae_spec), catalogue)
    assert len(lines) == 3
    text = "\n".join(lines)
    assert "components.encoder.latent: Input should be a valid integer" in text
    assert "components.decoder.net.hiden: unknown parameter 'hiden'; did you mean 'hidden'?" in text
    assert "losses.vae.prior: unknown component 'priorr'; did you mean 'prior'?" in text
    source_lines = yaml.safe_dump(vae_spec, sort_keys=False).splitlines()
    for line in lines:
        number = int(line.split(":")[1])
        key = line.split(": ")[1].split(".")[-1]
        assert key in source_lines[number - 1], (line, source_lines[number - 1])


def test_wrong_kind_is_named(vae_spec, catalogue) -> None:
    vae_spec["losses"]["vae"]["prior"] = "encoder"
    (line,) = problems(vae_spec, catalogue)
    assert "losses.vae.prior: 'encoder' is an encoder, expected a prior or a flow" in line


def test_type_of_the_wrong_section(vae_spec, catalogue) -> None:
    vae_spec["components"]["prior"] = {"type": "elbo"}
    (line,) = problems(vae_spec, catalogue)
    assert "components.prior.type: 'elbo' is a loss" in line


def test_top_level_unknown_key_has_a_hint(vae_spec, catalogue) -> None:
    vae_spec["train"]["stepz"] = 3
    (line,) = problems(vae_spec, catalogue)
    assert "train.stepz: unknown key 'stepz'; did you mean 'steps'?" in line


@pytest.mark.parametrize(
    "override, message",
    [
        ("players.model.n_critic=5", "players.model.n_critic: unknown key 'n_critic'; did you mean 'steps'? (a player's optimizer steps per round"),
        ("train.optimizer.learning_rate=1e-3", "train.optimizer.learning_rate: unknown key 'learning_rate'; did you mean 'lr'? (the learning rate)"),
        ("players.model.optimizer={type: sgd, learning_rate: 1}", "players.model.optimizer.learning_rate: unknown key 'learning_rate'; did you mean 'lr'?"),
        ("train.optimizer.momentun=0.9", "train.optimizer.momentun: unknown key 'momentun'; did you mean 'momentum'?"),
        ("components.prior.type=realnvp", "components.prior.type: unknown"),
    ],
)
def test_names_from_other_tools_get_a_hint(vae_spec, catalogue, override, message) -> None:
    vae_spec["players"] = {"model": {"params": "all"}}
    vae_spec["train"]["optimizer"] = {"type": "sgd", "lr": 0.1}
    (line,) = problems(vae_spec, catalogue, [override])
    assert line.startswith(f"--set: {message}")


def test_a_flow_paper_name_as_a_bijector_type_points_to_the_coupling(catalogue) -> None:
    spec = yaml.safe_load((Path(__file__).parents[2] / "specs" / "nice_digits.yaml").read_text())
    lines = problems(spec, catalogue, ["components.flow.bijectors[1].type=realnvp"])
    assert any("unknown bijector type 'realnvp'; did you mean 'affine_coupling'? (RealNVP is a stack of affine couplings" in line for line in lines)


def test_optimizer_errors_drop_the_union_tag(vae_spec, catalogue) -> None:
    vae_spec["train"]["optimizer"] = {"type": "adam", "lr": -1}
    (line,) = problems(vae_spec, catalogue)
    assert "train.optimizer.lr: Input should be greater than 0" in line


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.optimizer.betas=[1.5, 0.9]", "train.optimizer.betas[0]: Input should be less than 1"),
        ("train.optimizer.weight_decay=-1", "train.optimizer.weight_decay: Input should be greater than or equal to 0"),
        ("train.optimizer={type: rmsprop, alpha: 1}", "train.optimizer.alpha: Input should be less than 1"),
        ("train.optimizer={type: sgd, momentum: -1}", "train.optimizer.momentum: Input should be greater than or equal to 0"),
        ("train.optimizer={type: sgd, nesterov: true}", "train.optimizer: nesterov: true needs a momentum above 0 and dampening 0"),
        ("players={model: {schedule: {type: exponential, gamma: 1.5}}}", "players.model.schedule.gamma: Input should be less than or equal to 1"),
        ("evaluate.samples=1000000000", "evaluate.samples: Input should be less than or equal to 10000"),
        ("evaluate.metrics=[{type: sample_grid, samples: 1000000000}]", "evaluate.metrics[0].samples: Input should be less than or equal to 10000"),
        ("evaluate.metrics=[{type: interpolation_grid, model: vae, pairs: 100, steps: 101}]", "evaluate.metrics[0]: pairs × steps = 10100 images; a picture holds at most 10,000"),
    ],
)
def test_settings_torch_or_the_run_cannot_use_are_refused_where_they_are_written(vae_spec, catalogue, override, message) -> None:
    """Not by torch once training starts (``Invalid beta parameter at index 0: 1.5``, no file or key), nor, for a schedule
    whose lr grows without end, by an OverflowError after some steps, nor, for a sample grid of 10⁹ pictures, by an
    allocation failure after training blamed on the model that drew them."""
    (line,) = problems(vae_spec, catalogue, [override])
    assert line.startswith(f"--set: {message}"), line


@pytest.mark.parametrize(
    "spec, override, path",
    [
        ("flow_moons", "components.flow.repeat=1000000000", "components.flow.repeat"),
        ("cyclegan_digits", "components.g_ba.blocks=1000000000000", "components.g_ba.blocks"),
        ("glow_digits", "components.flow.bijectors[0].steps=1000000000", "components.flow.bijectors[0].steps"),
    ],
)
def test_a_count_of_blocks_beyond_a_thousand_is_refused_before_any_is_built(catalogue, spec, override, path) -> None:
    """Building them took time in proportion and memory without end: validate never returned."""
    raw = yaml.safe_load((Path(__file__).parents[2] / "specs" / f"{spec}.yaml").read_text())
    assert problems(raw, catalogue, [override]) == [f"--set: {path}: Input should be less than or equal to 1000"]


@pytest.mark.parametrize("value, bound", [("-1", "greater than or equal to 0"), ("9223372036854775808", "less than 9223372036854775808")])
def test_a_dataset_seed_has_the_range_of_the_spec_s_seed(vae_spec, catalogue, value, bound) -> None:
    """Both used to differ: the dataset's took -1 and 2⁶⁴, leaving unsaid which seed split the data."""
    assert problems(vae_spec, catalogue, [f"data.seed={value}"]) == [f"--set: data.seed: Input should be {bound}"]
    assert problems(vae_spec, catalogue, [f"seed={value}"]) == [f"--set: seed: Input should be {bound}"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("players={model: {terms: [vae, vae]}}", "players.model.terms: names 'vae' more than once; list each term"),
        ("players={model: {params: [encoder, decoder, encoder]}}", "players.model.params: names 'encoder' more than once; list each component once"),
        ("train.ema={components: [decoder, decoder]}", "train.ema.components: names 'decoder' more than once; list each component once"),
    ],
)
def test_a_name_listed_twice_is_refused(vae_spec, catalogue, override, message) -> None:
    """A term listed twice would count twice, or silently once: the spec says which it wants with a weight."""
    (line,) = problems(vae_spec, catalogue, [override])
    assert line.startswith(f"--set: {message}"), line


def test_an_unknown_type_of_a_built_in_section_gets_a_suggestion_at_its_type_key(vae_spec, catalogue) -> None:
    """Not pydantic's "Input tag 'sgdd' found using tag() does not match ...", and blamed on the override that set it."""
    assert problems(vae_spec, catalogue, ["train.optimizer.type=sgdd"]) == [
        "--set: train.optimizer.type: unknown type 'sgdd'; did you mean 'sgd'? (the types here: adam, adamw, rmsprop, sgd)"
    ]


def test_overrides_apply_and_validate(vae_spec, catalogue) -> None:
    spec = load_spec(vae_spec, ["train.steps=7", "train.optimizer.lr=1e-4", "components.prior.shape=[4]"], catalogue)
    assert spec.model.train.steps == 7
    assert spec.model.train.optimizer.lr == pytest.approx(1e-4)
    lines = problems(vae_spec, catalogue, ["train.stepz=3"])
    assert lines == ["--set: train.stepz: unknown key 'stepz'; did you mean 'steps'?"]
    (line,) = problems(vae_spec, catalogue, ["train.steps=many"])
    assert line.startswith("--set: train.steps:")


def test_malformed_override(vae_spec, catalogue) -> None:
    (line,) = problems(vae_spec, catalogue, ["train.steps"])
    assert "not of the form key.path=value" in line


def test_component_names_must_be_identifiers(vae_spec, catalogue) -> None:
    vae_spec["components"]["my prior"] = copy.deepcopy(vae_spec["components"]["prior"])
    (line,) = problems(vae_spec, catalogue)
    assert "must be identifiers" in line


@pytest.mark.parametrize("name", ["nll.x", "", "a b/c", "flüß"])
def test_loss_names_must_be_identifiers_too(vae_spec, catalogue, name) -> None:
    """A dot or an empty name crashed the build in nn.ModuleDict; a slash went into every logged key."""
    vae_spec["losses"] = {name: vae_spec["losses"]["vae"]}
    vae_spec["evaluate"]["metrics"] = []
    (line,) = problems(vae_spec, catalogue)
    assert line.endswith(f"{format_path(('losses', name))}: loss names must be identifiers (ASCII letters, digits, _, not starting with a digit)"), line


@pytest.mark.parametrize(("section", "name"), [("components", "train"), ("components", "training"), ("losses", "eval"), ("losses", "state_dict")])
def test_names_torch_modules_use_for_themselves_are_refused_before_anything_is_built(vae_spec, catalogue, section, name) -> None:
    """nn.ModuleDict cannot hold a `train` or a `state_dict`: the build crashed with a KeyError traceback."""
    if section == "components":
        vae_spec["components"][name] = vae_spec["components"].pop("prior")
        vae_spec["losses"]["vae"]["prior"] = vae_spec["sample"]["prior"] = name
    else:
        vae_spec["losses"] = {name: vae_spec["losses"]["vae"]}
    (line, *_) = problems(vae_spec, catalogue)
    assert f"{section}.{name}: {name!r} is taken: torch modules have a method or attribute of that name" in line


def test_two_inline_definitions_of_the_same_name_are_refused_not_one_replaced_by_the_other(vae_spec, catalogue) -> None:
    """A loss named `sample` and the sampler, each with an inline decoder: both were `sample.decoder`, the sampler's won."""
    inline = vae_spec["components"].pop("decoder")
    vae_spec["losses"] = {"sample": {**vae_spec["losses"]["vae"], "decoder": inline}}
    vae_spec["sample"]["decoder"] = copy.deepcopy(inline)
    vae_spec["evaluate"]["metrics"] = []
    (line,) = problems(vae_spec, catalogue)
    assert line.endswith(
        "sample.decoder: this inline definition is named 'sample.decoder', as is the one at losses.sample.decoder, which it would "
        "replace: rename the component or loss whose name begins it"
    ), line


def test_shipped_specs_validate(catalogue) -> None:
    from pathlib import Path

    specs = sorted((Path(__file__).parents[2] / "specs").glob("*.yaml"))
    assert specs
    for path in specs:
        load_spec(path, catalogue=catalogue)


def test_top_level_and_plugin_problems_are_reported_together(vae_spec, catalogue) -> None:
    vae_spec["train"]["steps"] = "lots"
    vae_spec["components"]["prior"]["type"] = "standard_normall"
    lines = problems(vae_spec, catalogue)
    assert any("train.steps" in line for line in lines)
    assert any("components.prior.type" in line for line in lines)


@pytest.mark.parametrize("value, shown", [(".nan", "nan"), (".inf", "inf"), ("-.inf", "-inf")])
def test_non_finite_numbers_are_refused_in_the_top_level(vae_spec, catalogue, value, shown) -> None:
    lines = problems(vae_spec, catalogue, [f"train.optimizer.lr={value}", f"players.model={{terms: {{vae: {value}}}}}"])
    assert lines == [
        f"--set: players.model.terms.vae: must be a finite number, not {shown}",
        f"--set: train.optimizer.lr: must be a finite number, not {shown}",
    ]


def test_true_or_false_is_refused_where_a_number_is_wanted(vae_spec, catalogue) -> None:
    """pydantic would read them as 1 and 0: ``latent: true`` would build a one-dimensional latent."""
    vae_spec["components"]["encoder"]["latent"] = True
    lines = problems(from_yaml(vae_spec), catalogue, ["train.optimizer.betas=[0.9, false]", "players.model={terms: {vae: true}}"])
    assert sorted(lines) == [
        "--set: players.model.terms: true or false where a number is wanted",
        "--set: train.optimizer.betas: true or false where a number is wanted",
        f"spec.yaml:{line_of(vae_spec, 'latent:')}: components.encoder.latent: true or false where a number is wanted",
    ]
    load_spec(vae_spec, ["train.compile=true", "components.encoder.latent=2"], catalogue)  # a bool where one is wanted


def test_non_finite_numbers_are_refused_in_plugin_parameters(vae_spec, catalogue) -> None:
    vae_spec["losses"]["vae"]["beta"] = float("inf")
    (line,) = problems(from_yaml(vae_spec), catalogue)
    assert line == f"spec.yaml:{line_of(vae_spec, 'beta:')}: losses.vae.beta: must be a finite number, not inf"


@pytest.mark.parametrize("terms", [[], {}])
def test_an_empty_list_of_terms_is_refused(vae_spec, catalogue, terms) -> None:
    vae_spec["players"] = {"model": {"params": ["encoder", "decoder"], "terms": terms}}
    (line,) = problems(from_yaml(vae_spec), catalogue)
    where = line_of(vae_spec, "terms:")
    assert line == f"spec.yaml:{where}: players.model.terms: names no loss term; name the terms this player minimises, or omit `terms` for every term"
    del vae_spec["players"]["model"]["terms"]
    assert load_spec(vae_spec, catalogue=catalogue).model.players["model"].weights() is None  # omitted: every term


def test_an_empty_list_of_params_is_refused_before_anything_is_built(vae_spec, catalogue) -> None:
    vae_spec["players"] = {"model": {"params": []}}
    (line,) = problems(from_yaml(vae_spec), catalogue)
    where = line_of(vae_spec, "params:")
    assert line == f"spec.yaml:{where}: players.model.params: names no component; list the components this player updates, or omit `params` for all of them"


def test_a_bad_value_for_terms_gets_one_message(vae_spec, catalogue) -> None:
    assert problems(vae_spec, catalogue, ["players.model={terms: vae}"]) == ["--set: players.model.terms: Input should be a valid list"]


def test_a_mapping_given_as_a_word_is_named(vae_spec, catalogue) -> None:
    assert problems(vae_spec, catalogue, ["train.optimizer=sgd"]) == ["--set: train.optimizer: expected a mapping, got str 'sgd'"]


def test_missing_keys_are_named_at_the_line_of_their_mapping(vae_spec, catalogue) -> None:
    assert problems(parse_text("", "empty.yaml"), catalogue) == [
        "empty.yaml:1: name: required key is missing",
        "empty.yaml:1: data: required key is missing",
    ]
    vae_spec["train"]["ema"] = {"decay": 0.9}
    where = line_of(vae_spec, "ema:")
    assert problems(from_yaml(vae_spec), catalogue) == [f"spec.yaml:{where}: train.ema.components: required key is missing"]
    assert problems(vae_spec, catalogue, ["train.ema={decay: 0.9}"]) == ["--set: train.ema.components: required key is missing"]


def test_a_missing_key_of_a_typed_section_is_named(vae_spec, catalogue) -> None:
    vae_spec["players"] = {"model": {"schedule": {"type": "step"}}}
    where = line_of(vae_spec, "schedule:")
    assert problems(from_yaml(vae_spec), catalogue) == [f"spec.yaml:{where}: players.model.schedule.every: required key is missing"]


def test_unknown_components_to_average_are_found_when_validating(vae_spec, catalogue) -> None:
    vae_spec["train"]["ema"] = {"components": ["decoder", "encodr", "nope", "encoder.net"]}
    first = line_of(vae_spec, "- decoder", after="ema:")
    assert problems(from_yaml(vae_spec), catalogue) == [
        f"spec.yaml:{first + 1}: train.ema.components[1]: unknown component 'encodr'; did you mean 'encoder'?",
        f"spec.yaml:{first + 2}: train.ema.components[2]: unknown component 'nope'",
        f"spec.yaml:{first + 3}: train.ema.components[3]: 'encoder.net' is defined inline in 'encoder'; average 'encoder', whose parameters include it",
    ]


@pytest.mark.parametrize("name", ["step", "nan_skips", "elapsed_s"])
def test_a_loss_is_not_named_as_a_key_of_the_training_log_s_own(vae_spec, catalogue, name: str) -> None:
    """A one-term loss logs under its own name: `step` overwrote every log line's step (and a resume, reading the log's
    steps as later than its checkpoint, moved the whole history aside)."""
    vae_spec["losses"] = {name: vae_spec["losses"]["vae"]}
    assert problems(vae_spec, catalogue)[0].endswith(
        f"losses.{name}: {name!r} is taken: every line of the training log holds a {name!r} of its own, which the loss's would overwrite; choose another"
    )


def test_a_part_defined_inline_in_a_loss_is_averaged_by_declaring_it_apart(vae_spec, catalogue) -> None:
    """A loss cannot be averaged, so the advice for its inline parts is to declare them under components:."""
    vae_spec["losses"]["vae"]["decoder"] = vae_spec["components"].pop("decoder")
    vae_spec["sample"]["decoder"] = "vae.decoder"  # refused too (below), but it keeps the sampler from naming a missing one
    vae_spec["train"]["ema"] = {"components": ["vae.decoder"]}
    assert f"spec.yaml:{line_of(vae_spec, '- vae.decoder')}: train.ema.components[0]: 'vae.decoder' is defined inline in 'vae'; to average it, " \
        "declare it under components: and name it in vae's decoder" in problems(from_yaml(vae_spec), catalogue)


@pytest.mark.parametrize(
    ("edit", "path", "message"),
    [
        (lambda s: s["components"].update(decoder2={"type": "bernoulli_decoder", "net": "decoder.net"}), "components.decoder2.net",
         "'decoder.net' is defined inline in 'decoder'; to use it here too, declare it under components: and name it in decoder's net and here"),
        (lambda s: s["sample"].update(decoder="vae.decoder") or s["losses"]["vae"].update(decoder=s["components"].pop("decoder")),
         "sample.decoder", "'vae.decoder' is defined inline in 'vae'; to use it here too, declare it under components: and name it in vae's decoder and here"),
    ],
    ids=["component's part", "loss's part"],
)
def test_a_part_defined_inline_is_not_named_elsewhere(vae_spec, catalogue, edit, path: str, message: str) -> None:
    """It would be shared in the model trained, but the run's spec.yaml writes it out where it is named: a second, untrained
    copy, so the folder would build another model than the one it holds (resume and evaluate refused it)."""
    edit(vae_spec)
    assert f"{path}: {message}" in [line.split(": ", 1)[1] for line in problems(vae_spec, catalogue)]


def test_a_metric_naming_an_unknown_loss_is_found_without_building(vae_spec, catalogue) -> None:
    """``model:`` fields are typed ``LossName``: the spec checks them, ``validate --static`` included."""
    vae_spec["evaluate"]["metrics"] = [{"type": "importance_sampled_nll", "model": "vea"}, {"type": "posterior_collapse", "model": "vae"}]
    with pytest.raises(SpecError) as info:
        load_spec(vae_spec, catalogue=catalogue)
    assert [p.message for p in info.value.problems] == ["unknown loss 'vea'; did you mean 'vae'?; losses: vae"]
    assert info.value.problems[0].path == ("evaluate", "metrics", 0, "model")


def test_a_spec_pickles_as_its_source_and_validates_again_where_it_is_unpickled() -> None:
    """What a process pool or a spawned worker does with a spec argument."""
    import pickle

    spec = load_spec(Path(__file__).resolve().parents[2] / "specs" / "vae_digits.yaml", ["train.steps=7"])
    back = pickle.loads(pickle.dumps(spec))
    assert back.to_dict() == spec.to_dict() and back.model.train.steps == 7 and back.source.name == spec.source.name


def test_a_spec_with_a_catalogue_of_its_own_copies_with_it_but_is_not_pickled() -> None:
    import copy
    import pickle

    from compose_gen.registry import make_catalogue

    catalogue = make_catalogue(entry_points="first-party")  # not the installed plugins' catalogue, as a test's own
    spec = load_spec(Path(__file__).resolve().parents[2] / "specs" / "vae_digits.yaml", catalogue=catalogue)
    for copied in (copy.copy(spec), copy.deepcopy(spec)):
        assert copied.catalogue is catalogue and copied.to_dict() == spec.to_dict()
    with pytest.raises(TypeError, match="loaded with a catalogue of your own, which cannot be pickled"):
        pickle.dumps(spec)



def test_a_spec_and_its_catalogue_print_as_one_line_each() -> None:
    """Not the whole source, sections and every registered type, as a dataclass's repr would."""
    spec = load_spec(Path(__file__).resolve().parents[2] / "specs" / "vae_digits.yaml", ["train.steps=7"])
    assert repr(spec) == f"<Spec 'vae_digits' from {spec.source.name}, 1 override(s)>"
    plugins = len(set(spec.catalogue.plugin_of.values()))
    assert repr(spec.catalogue) == f"<Catalogue of {len(spec.catalogue.types)} types from {plugins} installed plugins>"


def test_a_metric_may_be_named_alone_as_a_transform_may(vae_spec, catalogue) -> None:
    spec = copy.deepcopy(vae_spec)
    spec["evaluate"] = {"metrics": ["test_losses"]}
    resolved = load_spec(spec, catalogue=catalogue)
    assert resolved.to_dict()["evaluate"]["metrics"][0]["type"] == "test_losses"
    spec["evaluate"] = {"metrics": ["importance_sampled_nll", 3]}
    assert problems(spec, catalogue) == [
        "<dict>:1: evaluate.metrics[1]: a metric is a mapping {type: NAME, ...}, or NAME alone, got int 3"
    ]
    spec["evaluate"] = {"metrics": ["importance_sampled_nll"]}
    assert problems(spec, catalogue) == ["<dict>:1: evaluate.metrics[0].model: required parameter is missing"]


def test_a_player_weighting_every_term_0_is_refused(vae_spec, catalogue) -> None:
    """Weight 0 only logs a term: such a player would minimise nothing, and its parameters never move."""
    assert problems(vae_spec, catalogue, ["players={model: {terms: {vae: 0}}}"]) == [
        "--set: players.model.terms: weights every term 0, so the player minimises nothing (weight 0 only logs a term): "
        "give some term a weight"
    ]


# --- a spec given as a Python mapping is the spec's own plain data ------------------------------------------


def test_a_mapping_edited_after_loading_changes_no_spec_loaded_from_it(vae_spec, catalogue) -> None:
    """A sweep that edits one mapping and loads it each time trained, in pool workers (which load the pickled
    source again), whatever the mapping held last: the spec shared its nested dicts."""
    import pickle

    specs = []
    for latent in (4, 8):
        vae_spec["components"]["encoder"]["latent"] = latent
        specs.append(load_spec(vae_spec, catalogue=catalogue))
    again = [pickle.loads(pickle.dumps(spec)) for spec in specs]
    assert [s.sections.components["encoder"].params.latent for s in again] == [4, 8]
    assert specs[0].source.data["components"]["encoder"]["latent"] == 4


def test_an_override_changes_one_place_of_a_mapping_that_shares_a_dict(vae_spec, catalogue) -> None:
    """One dict used in two places (as YAML's anchors are expanded into copies) is two places of the spec."""
    net = vae_spec["components"]["encoder"]["net"]
    vae_spec["components"]["second"] = {"type": "gaussian_encoder", "latent": 4, "net": net}
    spec = load_spec(vae_spec, ["components.encoder.net.hidden=[16]"], catalogue)
    assert spec.source.data["components"]["encoder"]["net"]["hidden"] == [16]
    assert spec.source.data["components"]["second"]["net"]["hidden"] == [32] and net["hidden"] == [32]


def test_numpy_values_and_paths_become_what_yaml_writes(vae_spec, catalogue) -> None:
    """A beta sweep over np.linspace passed validate and then failed writing the run's spec.yaml."""
    import numpy as np

    vae_spec["losses"]["vae"]["beta"] = np.float64(0.5)  # a float subclass: kept, it dumped as numpy's own
    vae_spec["train"]["log_every"] = np.int32(10)
    vae_spec["components"]["encoder"]["net"]["hidden"] = np.arange(1, 3) * 16
    vae_spec["train"]["steps"] = np.int64(20)
    vae_spec["description"] = Path("a/b")
    spec = load_spec(vae_spec, catalogue=catalogue)
    assert yaml.safe_load(spec.to_yaml())["components"]["encoder"]["net"]["hidden"] == [16, 32]
    assert spec.source.data["losses"]["vae"]["beta"] == 0.5 and spec.source.data["description"] == "a/b"
    assert type(spec.source.data["losses"]["vae"]["beta"]) is float and type(spec.source.data["train"]["log_every"]) is int


def test_an_object_yaml_cannot_write_is_named_at_its_path(vae_spec, catalogue) -> None:
    import torch

    vae_spec["components"]["encoder"]["net"]["hidden"] = [torch.tensor(32)]
    vae_spec["train"]["again"] = vae_spec["train"]
    with pytest.raises(SpecError) as info:
        load_spec(vae_spec, catalogue=catalogue)
    assert str(info.value).splitlines() == [
        "<dict>:1: components.encoder.net.hidden[0]: holds a Tensor; a spec holds what YAML writes: numbers, strings, booleans, null, lists and mappings",
        "<dict>:1: train.again: holds the mapping or list it is part of, which has no finite value",
    ]


def test_top_level_keys_beginning_x_hold_anchors_for_the_sections(catalogue) -> None:
    """README says anchors share settings, but a top-level block to hold them was refused as an unknown key."""
    text = (Path(__file__).resolve().parents[2] / "specs" / "vae_digits.yaml").read_text()
    anchored = "x-net: &net {type: mlp, hidden: [32]}\n" + text
    spec = load_spec(parse_text(anchored, "anchored.yaml"), catalogue=catalogue)
    assert "x-net" not in spec.to_dict()
    with pytest.raises(SpecError, match="defaults"):
        load_spec(parse_text("defaults: {hidden: [32]}\n" + text, "unknown.yaml"), catalogue=catalogue)


def test_an_unknown_top_level_key_without_a_near_miss_points_at_the_x_prefix(catalogue) -> None:
    """`defaults: &net {...}`, a block of anchors as other tools write it, was "unknown key 'defaults'" and no more."""
    text = (Path(__file__).resolve().parents[2] / "specs" / "vae_digits.yaml").read_text()
    with pytest.raises(SpecError) as info:
        load_spec(parse_text("defaults: &net {hidden: [32]}\n" + text, "unknown.yaml"), catalogue=catalogue)
    assert str(info.value).splitlines() == [
        "unknown.yaml:1: defaults: unknown key 'defaults'; a top-level key of your own (one that holds anchors, say) begins with 'x-': x-defaults"
    ]
    with pytest.raises(SpecError) as info:  # a near miss keeps its "did you mean" alone
        load_spec(parse_text("losses2: {}\n" + text, "unknown.yaml"), catalogue=catalogue)
    assert str(info.value).splitlines() == ["unknown.yaml:1: losses2: unknown key 'losses2'; did you mean 'losses'?"]


def test_a_definition_indented_under_another_component_is_said_to_be_indented_too_deep(catalogue) -> None:
    """`decoder:` indented under `encoder:` was "unknown parameter 'decoder'" with no word of the indentation."""
    text = (Path(__file__).resolve().parents[2] / "specs" / "vae_digits.yaml").read_text()
    text = text.replace("  decoder:\n    type: bernoulli_decoder\n    net:", "    decoder:\n      type: bernoulli_decoder\n      net:")
    with pytest.raises(SpecError) as info:
        load_spec(parse_text(text, "indented.yaml"), catalogue=catalogue)
    assert (
        "components.encoder.decoder: unknown parameter 'decoder'; it holds a definition of type 'bernoulli_decoder': "
        "indented one level too deep? (an entry of its own goes one level up)"
    ) in str(info.value)


def test_a_graph_call_cut_at_its_comma_by_a_flow_mapping_is_said_to_be(vae_spec, catalogue) -> None:
    """`graph: {c: cat(x, h)}` reads as c: 'cat(x' and a key 'h)', which was "graph.h): Input should be a valid string"."""
    text = yaml.safe_dump(vae_spec, sort_keys=False) + "graph: {h: encoder(x), c: cat(x, h)}\n"
    lines = problems(parse_text(text, "spec.yaml"), catalogue)
    assert lines == [
        f"spec.yaml:{len(text.splitlines())}: graph: c: 'cat(x' leaves its call's parenthesis open (in a {{...}} mapping, YAML ends a value "
        "at each comma: write the graph one value per line, or quote each call, c: \"cat(x, ...)\")"
    ]


def test_a_number_where_text_is_wanted_is_told_to_be_quoted(vae_spec, catalogue) -> None:
    """`name: 2024` (YAML reads a number) was "Input should be a valid string", not saying what was read or the fix."""
    vae_spec["name"] = 2024
    assert problems(vae_spec, catalogue) == ["<dict>:1: name: Input should be a valid string, got the number 2024: for the text, quote it ('2024')"]


def test_a_graph_value_named_as_a_component_is_located_at_the_value(vae_spec, catalogue) -> None:
    """It was "spec.yaml:1: names used both as component and graph value: ['encoder']": the first line, no spec path."""
    vae_spec["graph"] = {"h": "encoder(x)", "encoder": "one_hot(y, 10)"}
    data = copy.deepcopy(vae_spec)
    assert problems(from_yaml(vae_spec), catalogue) == [
        f"spec.yaml:{line_of(data, 'encoder: one_hot')}: graph.encoder: 'encoder' names a component too (components.encoder): give this graph value another name"
    ]


def test_a_loaded_spec_loads_again_with_more_overrides(catalogue) -> None:
    """load_spec(spec) failed with 'expected str, bytes or os.PathLike object, not Spec'."""
    first = load_spec(Path(__file__).resolve().parents[2] / "specs" / "vae_digits.yaml", ["train.steps=7"], catalogue)
    again = load_spec(first, ["train.batch_size=16"])
    assert (again.model.train.steps, again.model.train.batch_size, again.catalogue) == (7, 16, catalogue)
    assert first.model.train.batch_size != 16


def test_overriding_a_block_of_anchors_is_refused(catalogue) -> None:
    """--set x-net.hidden=[8] changed nothing: the anchors were copied where used when the spec was read."""
    with pytest.raises(SpecError, match=r"override 'x-net.hidden=\[8\]' sets a block of anchors"):
        load_spec(Path(__file__).resolve().parents[2] / "specs" / "vae_digits.yaml", ["x-net.hidden=[8]"], catalogue)
