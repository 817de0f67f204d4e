"""The JSON Schema accepts the specs validate accepts and refuses the mistakes it can see."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest

from compose_gen.spec.resolve import LOG_RECORD_KEYS
from compose_gen.spec.schema import spec_schema
from compose_gen.spec.source import load_source

VAE = Path(__file__).resolve().parents[2] / "specs" / "vae_digits.yaml"


@pytest.fixture(scope="module")
def validator(catalogue) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(spec_schema(catalogue))


@pytest.fixture
def spec() -> dict:
    return copy.deepcopy(load_source(VAE).data)  # YAML 1.2 numbers, as editors read them


def test_a_shipped_spec_passes_and_a_misspelt_parameter_does_not(validator, spec) -> None:
    assert not list(validator.iter_errors(spec))
    spec["components"]["encoder"]["net"]["hiden"] = [3]
    assert list(validator.iter_errors(spec))


def test_a_spec_without_a_sampler_passes(validator, spec) -> None:
    """``sample: null`` is what validate reads as no sampler."""
    spec["sample"] = None
    assert not list(validator.iter_errors(spec))


@pytest.mark.parametrize("section", ["components", "losses"])
@pytest.mark.parametrize("name", ["2nd", "my-encoder", "train", "state_dict"])
def test_names_validate_refuses_are_refused(validator, spec, section, name) -> None:
    """Not identifiers, or names an nn.ModuleDict has as methods (the model holds components and losses in them)."""
    old = next(iter(spec[section]))
    spec[section][name] = spec[section].pop(old)
    assert list(validator.iter_errors(spec)), name


@pytest.mark.parametrize("name", LOG_RECORD_KEYS)
def test_a_loss_named_as_a_key_of_the_training_log_is_refused(validator, spec, name) -> None:
    spec["losses"][name] = spec["losses"].pop(next(iter(spec["losses"])))
    assert list(validator.iter_errors(spec)), name


def test_graph_value_names_must_be_identifiers(validator, spec) -> None:
    spec["graph"] = {"train": "x"}  # a graph value is no module: only the identifier rule applies
    assert not list(validator.iter_errors(spec))
    spec["graph"] = {"z-x": "x"}
    assert list(validator.iter_errors(spec))


def test_a_metric_without_required_parameters_may_be_named_alone(validator, spec) -> None:
    spec["evaluate"]["metrics"] = ["test_losses"]
    assert not list(validator.iter_errors(spec))
    spec["evaluate"]["metrics"] = ["importance_sampled_nll"]  # needs `model:`
    assert list(validator.iter_errors(spec))


def test_a_block_of_the_writer_s_own_anchors_passes_and_another_unknown_key_does_not(validator, spec) -> None:
    spec["x-defaults"] = {"hidden": [64]}
    assert not list(validator.iter_errors(spec))
    spec["defaults"] = {"hidden": [64]}
    assert list(validator.iter_errors(spec))
