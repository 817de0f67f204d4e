"""Validation against the catalogue: every problem, located, with suggestions."""

from __future__ import annotations

import copy

import pytest
import yaml

from compose_gen.spec import SpecError, load_spec
from compose_gen.spec.source import parse_text


def problems(spec, catalogue, overrides=()) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(spec, overrides, catalogue)
    return str(info.value).splitlines()


def from_yaml(data: dict) -> object:
    return parse_text(yaml.safe_dump(data, sort_keys=False), "spec.yaml")


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
    assert "losses.vae.prior: 'encoder' is a encoder, expected a prior or flow" in line


def test_type_of_the_wrong_section(vae_spec, catalogue) -> None:
    vae_spec["components"]["prior"] = {"type": "elbo"}
    (line,) = problems(vae_spec, catalogue)
    assert "components.prior.type: 'elbo' is a loss" in line


def test_top_level_unknown_key_has_a_hint(vae_spec, catalogue) -> None:
    vae_spec["train"]["stepz"] = 3
    (line,) = problems(vae_spec, catalogue)
    assert "train.stepz: unknown key 'stepz'; did you mean 'steps'?" in line


def test_optimizer_errors_drop_the_union_tag(vae_spec, catalogue) -> None:
    vae_spec["train"]["optimizer"] = {"type": "adam", "lr": -1}
    (line,) = problems(vae_spec, catalogue)
    assert "train.optimizer.lr: Input should be greater than 0" in line


def test_overrides_apply_and_validate(vae_spec, catalogue) -> None:
    spec = load_spec(vae_spec, ["train.steps=7", "train.optimizer.lr=1e-4", "components.prior.shape=[4]"], catalogue)
    assert spec.model.train.steps == 7
    assert spec.model.train.optimizer.lr == pytest.approx(1e-4)
    lines = problems(vae_spec, catalogue, ["train.stepz=3"])
    assert lines == ["--set:0: train.stepz: unknown key 'stepz'; did you mean 'steps'?"]
    (line,) = problems(vae_spec, catalogue, ["train.steps=many"])
    assert line.startswith("--set:0: train.steps:")


def test_malformed_override(vae_spec, catalogue) -> None:
    (line,) = problems(vae_spec, catalogue, ["train.steps"])
    assert "not of the form key.path=value" in line


def test_component_names_must_be_identifiers(vae_spec, catalogue) -> None:
    vae_spec["components"]["my prior"] = copy.deepcopy(vae_spec["components"]["prior"])
    (line,) = problems(vae_spec, catalogue)
    assert "must be identifiers" in line


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
