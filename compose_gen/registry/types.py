"""What a plugin registers: a :class:`ComponentType` with a pydantic parameter model.

A parameter model subclasses :class:`Params`.  Fields that name other parts of
the spec are annotated so the compiler can wire the graph without knowing the
plugin:

* ``Ref("network")`` — a component of one of the given kinds, either by name
  (``net: encoder_net``) or defined inline (``net: {type: mlp, ...}``);
* ``Value`` — a named graph value or batch field (``real: x``);
* ``LossName`` — a loss under ``losses:`` (a metric's ``model: vae``), read with ``ctx.loss``.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Annotated, Callable, Iterator, Mapping, Union, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, WithJsonSchema, model_validator
from pydantic.fields import FieldInfo

__all__ = [
    "COMPONENT_KINDS",
    "COMPONENT_PLACEHOLDER",
    "KINDS",
    "ComponentType",
    "LossName",
    "LossRef",
    "Params",
    "Ref",
    "RefTo",
    "MAX_SIZE",
    "Seed",
    "Size",
    "StrictModel",
    "Value",
    "ValueRef",
    "ref_fields",
]

#: Kinds that live under ``components:`` in a spec.
COMPONENT_KINDS = (
    "network",
    "prior",
    "flow",
    "encoder",
    "decoder",
    "bijector",
    "generator",
    "critic",
)
#: Every kind a plugin may register, with the spec section each belongs to.
KINDS = (*COMPONENT_KINDS, "loss", "dataset", "metric", "sampler")


#: Stands for "any component definition" in a parameter model's JSON schema;
#: :mod:`compose_gen.spec.schema` replaces it by a reference to the union of all component types.
COMPONENT_PLACEHOLDER = "x-compose-gen-component"


class StrictModel(BaseModel):
    """Unknown keys are errors, and so are NaN and ±infinity in a float (``.nan``, ``.inf``), ``true``/``false``
    where a number is wanted (pydantic would read them as 1 and 0), and anything else where a boolean is (pydantic
    would read ``no``, ``on``, ``1`` as one, which YAML 1.2 and the JSON Schema do not): each field that takes numbers,
    or a boolean alone, gets that check."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        checked = False
        for field in cls.model_fields.values():
            check = _refuse_truth_values if _takes_numbers(field.annotation) else _require_bool if _takes_bool(field.annotation) else None
            if check is not None and not any(getattr(m, "func", None) is check for m in field.metadata):
                field.metadata.append(BeforeValidator(check))
                checked = True
        if checked:  # a forward reference not yet defined leaves the model to pydantic's rebuild on first use, as before
            cls.model_rebuild(force=True, raise_errors=False)


def _takes_numbers(annotation: Any) -> bool:
    """Whether ``annotation`` wants numbers somewhere, and never a bool (``float | bool`` takes ``true`` as meant)."""
    args = get_args(annotation)
    if bool in args:
        return False
    return annotation in (int, float) or any(_takes_numbers(arg) for arg in args)


def _takes_bool(annotation: Any) -> bool:
    """Whether ``annotation`` is ``bool``, or ``bool | None``."""
    return annotation is bool or (bool in get_args(annotation) and set(get_args(annotation)) <= {bool, type(None)})


def _require_bool(value: Any) -> Any:
    """``value`` if it is ``true``, ``false`` or None."""
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"true or false, not {value!r}: only true and false are booleans (YAML 1.2 reads no, off and y as text)")


def _refuse_truth_values(value: Any) -> Any:
    """``value`` unless it is, or its lists, tuples or mappings hold at any depth, ``true`` or ``false``."""
    if _holds_truth_value(value):
        raise ValueError("true or false where a number is wanted")
    return value


def _holds_truth_value(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return any(map(_holds_truth_value, items))


class Params(StrictModel):
    """Base of every parameter model: unknown keys are errors, not ignored.

    A float must be finite: ``.nan``, ``.inf`` and ``-.inf`` are refused where
    the spec is validated, naming the parameter, before anything is built.  A
    parameter for which infinity is a legitimate value (a bound that may be
    absent, say) opts back in, for one field or for a whole model::

        clip: float = Field(math.inf, allow_inf_nan=True)           # this field
        bounds: list[Annotated[float, Field(allow_inf_nan=True)]]  # items of a list
        model_config = ConfigDict(allow_inf_nan=True)              # every float of this model

    (Prefer ``float | None = None`` for "no bound" where the code can tell.)

    A field typed ``Path`` (or a list, tuple or dict of paths) is read relative to the working directory (after
    ``~`` expansion) and stored absolute, so the resolved spec that a run folder
    keeps still finds the file when the run is resumed or evaluated from elsewhere.

    ``true`` or ``false`` for a number is an error (not 1 or 0), as :class:`StrictModel` says.
    Defaults are validated too, so a default that breaks its own field's constraint
    is reported, naming the type, where a spec that uses the type is validated.
    """

    model_config = ConfigDict(validate_default=True)

    @model_validator(mode="after")
    def _absolute_paths(self) -> Params:
        for name, value in self:
            self.__dict__[name] = _absolute(value)  # not setattr: a plugin's model may be frozen
        return self


def _absolute(value: Any) -> Any:
    """``value`` with every relative path in it (in lists, tuples, dict values and nested settings models too) made
    absolute after ``~`` expansion."""
    if isinstance(value, Path):
        return value if value.is_absolute() else value.expanduser().absolute()
    if type(value) in (list, tuple):
        return type(value)(map(_absolute, value))
    if isinstance(value, dict):
        return {key: _absolute(item) for key, item in value.items()}
    if isinstance(value, BaseModel) and not isinstance(value, Params):  # a nested settings model (a Params is made absolute itself)
        for name, item in value:
            value.__dict__[name] = _absolute(item)
    return value


@dataclass(frozen=True)
class RefTo:
    """Marks a field as a reference to a component of one of ``kinds``."""

    kinds: tuple[str, ...]


@dataclass(frozen=True)
class ValueRef:
    """Marks a field as the name of a graph value or batch field."""


@dataclass(frozen=True)
class LossRef:
    """Marks a field as the name of a loss under ``losses:``."""


def Ref(*kinds: str) -> Any:  # noqa: N802 - reads as a type in annotations
    """Annotation for a field referring to a component of one of ``kinds``."""
    unknown = set(kinds) - set(COMPONENT_KINDS)
    if unknown:
        raise ValueError(f"unknown component kinds {sorted(unknown)}")
    return Annotated[
        Union[str, dict[str, Any]],
        RefTo(kinds),
        WithJsonSchema(
            {
                "anyOf": [{"type": "string"}, {COMPONENT_PLACEHOLDER: True}],
                "description": f"a {' or '.join(kinds)}: a component name or an inline definition",
            }
        ),
    ]


def _refuse_bare_ref(source: Any, handler: Any) -> Any:
    """``net: Ref`` (not called) as an annotation: say so, instead of pydantic's ``NameError: name 'Any' is not defined``."""
    raise TypeError('annotate a reference by calling Ref with the kinds it may name, `net: Ref("network")`, not with the bare `Ref`')


Ref.__get_pydantic_core_schema__ = _refuse_bare_ref  # type: ignore[attr-defined]

#: Annotation for a field naming a graph value or batch field.
Value = Annotated[str, ValueRef()]
#: Annotation for a field naming a loss under ``losses:``; the spec checks the name before anything is built.
LossName = Annotated[str, LossRef()]
#: Annotation for a seed: a whole number in [0, 2⁶³), the range of torch's generators and of the spec's own ``seed``.
Seed = Annotated[int, Field(ge=0, lt=2**63)]
#: The largest :data:`Size`: no width or side of a tensor a spec sets is larger (a prior of shape [10⁹] allocated gigabytes).
MAX_SIZE = 2**24
#: Annotation for a width, a feature count or one dimension of a shape: a whole number in [1, :data:`MAX_SIZE`].
Size = Annotated[int, Field(gt=0, le=MAX_SIZE)]


@dataclass(frozen=True)
class ComponentType:
    """A registered type: ``build(params, ctx)`` makes the object a spec names.

    ``kind`` places it in the spec (``components``, ``losses``, ``data``,
    ``evaluate.metrics``, ``sample``) and decides which references it may fill.
    """

    name: str
    kind: str
    params: type[Params]
    build: Callable[..., Any]
    doc: str = ""
    #: The whole description (formulas, what a metric reports); by default ``build``'s docstring, whose first line is
    #: ``doc``, or ``doc`` for a build without one.
    help: str = ""
    #: Names other tools and papers give what this type builds, each with why: ``{"realnvp": "RealNVP is a stack of
    #: affine couplings"}``.  A spec naming an unknown type so (any case, ``_`` and ``-`` ignored) is pointed here.
    aliases: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", self.name):
            raise ValueError(f"type name {self.name!r}: expected letters, digits, '_' or '-', starting with a letter")
        if self.kind not in KINDS:
            raise ValueError(f"type {self.name!r}: unknown kind {self.kind!r}; expected one of {KINDS}")
        if not (isinstance(self.params, type) and issubclass(self.params, Params)):
            raise TypeError(f"type {self.name!r}: params must be a subclass of compose_gen.Params, got {self.params!r}")
        if "type" in self.params.model_fields:
            raise ValueError(f"type {self.name!r}: its params declare a field 'type', the key a spec names the type with; rename the field")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in dict(self.aliases).items()):
            raise TypeError(f"type {self.name!r}: aliases must map names to the reason they mean this type, got {self.aliases!r}")
        if not callable(self.build):
            raise TypeError(f"type {self.name!r}: build must be callable as build(params, ctx), got {self.build!r}")
        _check_takes_params_and_ctx(self.name, self.build)
        _check_params_model(self.name, self.params)
        if not self.help:
            object.__setattr__(self, "help", (inspect.getdoc(self.build) or self.doc).strip())
        if not self.doc:
            object.__setattr__(self, "doc", self.help.splitlines()[0] if self.help else "")


def _check_takes_params_and_ctx(name: str, build: Callable[..., Any]) -> None:
    """``build`` accepts two arguments, else a spec using the type would fail at ``validate`` with Python's own complaint."""
    try:
        signature = inspect.signature(build)
    except (TypeError, ValueError):  # a builtin without one: it is called and judged then
        return
    try:
        signature.bind(None, None)
    except TypeError:
        raise TypeError(f"type {name!r}: build must be callable as build(params, ctx), but its signature is {signature}") from None


def _check_params_model(name: str, params: type[Params]) -> None:
    """Unknown keys stay errors, and a reference is an annotation, not a default: the two slips that fail late or not at all."""
    extra = params.model_config.get("extra")
    if extra != "forbid":
        fate = "kept unused" if extra == "allow" else "ignored"
        raise ValueError(
            f"type {name!r}: its params set extra={extra!r}, so a misspelt parameter in a spec would be {fate} without a word; "
            "leave extra as compose_gen.Params sets it, 'forbid'"
        )
    for field, info in params.model_fields.items():
        if any(isinstance(m, (RefTo, ValueRef, LossRef)) for m in _metadata(info.default)):
            raise TypeError(
                f"type {name!r}: the default of {field!r} is a reference annotation (Ref(...), Value or LossName); "
                f"annotate the field with it instead: `{field}: Ref(\"network\")`, with a default after `=` if it has one"
            )
        _check_writes_back(name, field, info)
        if info.default_factory is not None and not info.default_factory_takes_validated_data:
            try:
                info.get_default(call_default_factory=True)
            except Exception as error:  # else every listing of the plugins, and each spec using the type, would fail on it
                raise ValueError(f"type {name!r}: the default_factory of {field!r} raised {type(error).__name__}: {error}") from None
    for model in _nested_models(params):
        for field, info in model.model_fields.items():
            _check_writes_back(name, f"{model.__name__}.{field}", info)
        if issubclass(model, RootModel):  # a value of one type, which has no keys to misspell
            continue
        if model.model_config.get("extra") != "forbid":
            remedy = (
                f"leave extra as StrictModel sets it, 'forbid' (it sets extra={model.model_config.get('extra')!r})"
                if issubclass(model, StrictModel)
                else "derive it from compose_gen.registry.StrictModel"
            )
            raise ValueError(
                f"type {name!r}: its params hold the settings model {model.__name__}, which does not forbid unknown keys, so a "
                f"misspelt setting in a spec would be ignored without a word; {remedy}"
            )
    for model in (params, *_nested_models(params)):
        own = model.__pydantic_decorators__
        serialized = [*(f"{', '.join(d.info.fields)}" for d in own.field_serializers.values()), *(["the whole model"] if own.model_serializers else [])]
        if serialized:
            raise ValueError(
                f"type {name!r}: {model.__name__} serializes {', '.join(serialized)} its own way, so the spec.yaml a run folder "
                "keeps, their dump, may not give back the values the run used (a rounded float, say): drop the serializer"
            )
    if params.model_computed_fields:
        raise ValueError(
            f"type {name!r}: its params compute {', '.join(map(repr, params.model_computed_fields))}, which the spec.yaml a run "
            "folder keeps would list as parameters, which loading it again refuses; compute it in build or as a plain property"
        )


def _check_writes_back(name: str, field: str, info: FieldInfo) -> None:
    """The run folder keeps the spec as its parameters dump: a field must come back from that dump as it went in."""
    alias = info.alias or info.validation_alias or info.serialization_alias
    if alias is not None:
        raise ValueError(
            f"type {name!r}: its params give {field!r} the alias {alias!r}; a spec names a parameter by its field name, as "
            "the spec.yaml a run folder keeps writes it, so drop the alias (a Python keyword as a name: end it in '_')"
        )
    if info.exclude:
        raise ValueError(
            f"type {name!r}: its params exclude {field!r} from their dump, so the spec.yaml a run folder keeps would lack it "
            "and the run would load again with its default, another model; drop exclude"
        )


def _nested_models(params: type[BaseModel], seen: frozenset[type] = frozenset()) -> Iterator[type[BaseModel]]:
    """The pydantic models that ``params``' fields hold, at any depth (in lists, dicts, unions)."""
    for info in params.model_fields.values():
        for model in _models_in(info.annotation):
            if model not in seen:
                yield model
                yield from _nested_models(model, seen | {model, params})


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in getattr(annotation, "__args__", ()):
        yield from _models_in(arg)


def _metadata(annotation: Any) -> list[Any]:
    return list(getattr(annotation, "__metadata__", ()))


def ref_fields(model: type[BaseModel]) -> Iterator[tuple[str, RefTo | ValueRef | LossRef]]:
    """Yield ``(field, marker)`` once for every reference field of ``model``.

    Handles ``Ref(...)``, ``Value``, their lists, unions and optional forms;
    whether a given value is one reference or a list is read off the value.
    """
    for name, info in model.model_fields.items():
        markers = [m for m in info.metadata if isinstance(m, (RefTo, ValueRef, LossRef))]
        markers += [m for inner in _unwrap(info.annotation) for m in _metadata(inner) if isinstance(m, (RefTo, ValueRef, LossRef))]
        if markers:
            yield name, markers[0]


def _unwrap(annotation: Any) -> Iterator[Any]:
    origin = getattr(annotation, "__origin__", None)
    args = getattr(annotation, "__args__", ())
    if _metadata(annotation):
        yield annotation
    elif origin in (list, tuple) and args:
        yield from _unwrap(args[0])
    elif (origin is Union and args) or isinstance(annotation, types.UnionType):
        for arg in args:
            if arg is not type(None):
                yield from _unwrap(arg)
