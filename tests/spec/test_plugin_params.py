"""A plugin's parameter model that fails in ways pydantic does not report is named, with its type and plugin."""

from __future__ import annotations

import math

import pytest
import torch
from compose_gen_plugins import datasets, networks
from pydantic import ConfigDict, Field, field_validator

from compose_gen import ComponentType, Params, Ref, make_catalogue
from compose_gen.spec import SpecError, load_spec
from compose_gen.spec.schema import spec_schema
from compose_gen.testing.plugins import plugin


class LevelParams(Params):
    level: int = 0

    @field_validator("level")
    @classmethod
    def _known(cls, level: int) -> int:
        if level == 1:
            raise TypeError("validator blew up")
        if level == 4:  # a plugin's sys.exit, which exited the process that loaded the spec
            raise SystemExit("bad level")
        return {0: 0, 2: 2}[level]  # a KeyError for any other level


class TensorParams(Params):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    init: torch.Tensor | None = None


def metric(params: Params, ctx: object) -> object:
    """Nothing."""
    return lambda ectx: {}


@pytest.fixture(scope="module")
def catalogue():
    return make_catalogue([plugin(ComponentType("levels", "metric", LevelParams, metric), name="levelled"), datasets], entry_points=False)


@pytest.mark.parametrize("level, raised", [(1, "TypeError: validator blew up"), (3, "KeyError: 3"), (4, "SystemExit: bad level")])
def test_a_validator_raising_what_pydantic_does_not_catch_is_located(catalogue, level, raised) -> None:
    spec = {"name": "v", "data": {"type": "moons", "n": 16}, "evaluate": {"metrics": [{"type": "levels"}, {"type": "levels", "level": level}]}}
    with pytest.raises(SpecError) as info:
        load_spec(spec, catalogue=catalogue)
    assert str(info.value).endswith(f": evaluate.metrics[1]: type 'levels' (plugin 'levelled') failed to validate its parameters: {raised}")


def test_a_parameter_model_without_a_json_schema_is_named() -> None:
    catalogue = make_catalogue([plugin(ComponentType("tensor_init", "metric", TensorParams, metric), name="tensors")], entry_points=False)
    with pytest.raises(ValueError) as info:
        spec_schema(catalogue)
    message = str(info.value)
    assert message.startswith("no JSON Schema for the parameters of type 'tensor_init' (plugin 'tensors'): PydanticInvalidForJsonSchema:")
    assert "torch.Tensor" in message and "WithJsonSchema" in message


def test_a_type_without_a_json_schema_is_left_out_of_a_schema_that_lists_it() -> None:
    """What `compose-gen schema` does: one plugin's field does not take the others' schema down."""
    described = plugin(ComponentType("levels", "metric", LevelParams, metric), name="levelled")
    catalogue = make_catalogue([plugin(ComponentType("tensor_init", "metric", TensorParams, metric), name="tensors"), described], entry_points=False)
    left_out: list[str] = []
    schema = spec_schema(catalogue, left_out)
    assert len(left_out) == 1 and left_out[0].startswith("type 'tensor_init' (plugin 'tensors'): PydanticInvalidForJsonSchema:")
    assert "Metric_levels" in schema["$defs"] and "Metric_tensor_init" not in schema["$defs"]


def refused_metric(params: type[Params], **given: object) -> str | None:
    """The error of a spec whose one metric is of type 't' (plugin 'metrics_plugin') with ``params`` set to ``given``;
    None when it loads."""
    catalogue = make_catalogue([plugin(ComponentType("t", "metric", params, metric), name="metrics_plugin"), datasets], entry_points=False)
    spec = {"name": "v", "data": {"type": "moons", "n": 16}, "evaluate": {"metrics": [{"type": "t", **given}]}}
    try:
        load_spec(spec, catalogue=catalogue)
    except SpecError as error:
        return str(error)
    return None


class WarmupParams(Params):
    warmup: int = Field(0, gt=0)


def test_a_default_that_breaks_its_own_constraint_is_blamed_on_the_type_where_the_spec_is_validated() -> None:
    """Not accepted, written to the run folder's spec.yaml, and refused only when the run is loaded again."""
    assert refused_metric(WarmupParams).endswith(
        ": evaluate.metrics[0]: type 't' (plugin 'metrics_plugin'): the default of warmup is invalid "
        "(Input should be greater than 0); set warmup in the spec, and tell the plugin's authors"
    )
    assert refused_metric(WarmupParams, warmup=3) is None


class ClipParams(Params):
    clip: float = -math.inf


def test_an_infinite_default_is_blamed_on_the_type_with_the_field_that_opts_in() -> None:
    """Params refuse ±inf, so a plugin's ``clip: float = math.inf`` made every spec of its type fail with no word of why."""
    assert refused_metric(ClipParams).endswith(
        ": evaluate.metrics[0]: type 't' (plugin 'metrics_plugin'): clip defaults to -inf, which its field refuses, as every float "
        "of Params does unless it opts in: the plugin should declare it `clip: float = Field(-math.inf, allow_inf_nan=True)` "
        "(or `float | None = None`); meanwhile set clip in the spec"
    )


class ScoreParams(Params):
    reference: Ref("prior") = None  # type: ignore[valid-type,assignment]  # meant "absent", but not Optional


def test_a_none_default_that_its_field_refuses_is_said_once_with_the_plugins_fix() -> None:
    assert refused_metric(ScoreParams) == (
        "<dict>:1: evaluate.metrics[0]: type 't' (plugin 'metrics_plugin'): reference defaults to None, which its annotation "
        "does not accept: the plugin should annotate it Optional[...]"
    ), "one line, not one per branch of the Ref union"


class RequiredParams(Params):
    n: int | None = None

    @field_validator("n")
    @classmethod
    def _given(cls, n: int | None) -> int:
        if n is None:
            raise ValueError("n must be given")
        return n


def test_a_none_default_its_own_validator_refuses_keeps_the_plugins_message() -> None:
    """The annotation accepts None, so 'annotate it Optional' would be wrong advice."""
    assert refused_metric(RequiredParams).endswith("the default of n is invalid (n must be given); set n in the spec, and tell the plugin's authors")


def test_a_parameter_named_type_is_refused_when_the_type_is_made() -> None:
    """A spec could never set it, and the resolved spec would write its default over the type's name."""

    class Typed(Params):
        type: str = "fancy"

    with pytest.raises(ValueError, match="type 'typed': its params declare a field 'type', the key a spec names the type with"):
        ComponentType("typed", "metric", Typed, metric)


class FrozenDecoderParams(Params):
    model_config = ConfigDict(frozen=True)
    net: Ref("network")  # type: ignore[valid-type]


def test_a_frozen_parameter_model_with_a_reference_loads() -> None:
    """Resolving the reference set the field on the frozen model: pydantic's 'Instance is frozen', naming no plugin."""
    frozen = ComponentType("frozen_decoder", "decoder", FrozenDecoderParams, lambda p, ctx: None)
    catalogue = make_catalogue([plugin(frozen, name="cold"), networks, datasets], entry_points=False)
    inline = {"type": "mlp", "in_features": 4, "out_features": 64}
    for net, expected in ((inline, "decoder.net"), ("body", "body")):
        spec = load_spec(
            {"name": "cold", "data": {"type": "digits"}, "components": {"body": inline, "decoder": {"type": "frozen_decoder", "net": net}}},
            catalogue=catalogue,
        )
        assert spec.sections.components["decoder"].params.net == expected
