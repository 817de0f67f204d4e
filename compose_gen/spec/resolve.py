"""Second validation pass: every ``{type: ...}`` section against the catalogue.

Each declaration's parameters are validated by its type's pydantic model
(defaults filled in); inline component definitions in ``Ref`` fields are lifted
into named components (``encoder.net``); references are checked to exist and to
be of an accepted kind.  All problems are collected before raising.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, get_args

from pydantic import ValidationError
from torch import nn

from compose_gen.core.errors import described
from compose_gen.registry import COMPONENT_KINDS, Catalogue, ComponentType, LossRef, Params, RefTo, ref_fields, suggest
from compose_gen.spec.errors import PathPart, Problem, SpecError, format_path
from compose_gen.spec.model import SpecModel

__all__ = ["Declared", "LOG_RECORD_KEYS", "origin", "resolve_sections"]

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IDENTIFIER_RULE = "names must be identifiers (ASCII letters, digits, _, not starting with a digit)"
#: Names an ``nn.ModuleDict`` refuses as keys, its own methods and attributes, under which it could not hold a component or loss.
TAKEN_BY_TORCH = frozenset(dir(nn.ModuleDict()))
#: The keys of its own that the trainer writes in every line of the training log, beside the logged terms: a loss's term
#: logged under one of them (a one-term loss logs under its own name) would overwrite it, or be overwritten.
LOG_RECORD_KEYS = ("step", "nan_skips", "elapsed_s")


def _name_problem(name: str, what: str) -> str | None:
    """Why ``name`` cannot name a component or loss (``what``), or None: the model holds them in ``nn.ModuleDict``s."""
    if not IDENTIFIER.match(name):
        return f"{what} {_IDENTIFIER_RULE}"
    if name in TAKEN_BY_TORCH:
        return f"{name!r} is taken: torch modules have a method or attribute of that name, and the model holds {what}s by name; choose another"
    return None


@dataclass
class Declared:
    """One typed declaration of the spec, validated."""

    name: str
    type: ComponentType
    params: Params
    path: tuple[PathPart, ...]
    inline: bool = False

    @property
    def kind(self) -> str:
        return self.type.kind


@dataclass
class Sections:
    data: Declared | None
    components: dict[str, Declared]
    losses: dict[str, Declared]
    sampler: Declared | None
    metrics: list[Declared]


class _Resolver:
    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self.problems: list[Problem] = []
        self.components: dict[str, Declared] = {}
        self.pending_refs: list[tuple[str, tuple[str, ...], tuple[PathPart, ...]]] = []
        self.loss_refs: list[tuple[str, tuple[PathPart, ...]]] = []
        #: Components declared with problems already reported: references to them are not reported again.
        self.invalid: set[str] = set()
        #: Names the spec gives to other things than components (graph values, losses), said as such where a component is wanted.
        self.other_names: dict[str, str] = {}

    def problem(self, path: tuple[PathPart, ...], message: str) -> None:
        self.problems.append(Problem(path, message))

    def declare(self, name: str, raw: Any, kinds: tuple[str, ...], path: tuple[PathPart, ...]) -> Declared | None:
        if not isinstance(raw, dict):
            self.problem(path, f"expected a mapping with a `type`, got {type(raw).__name__}")
            return None
        type_name = raw.get("type")
        if "type" in raw and not isinstance(type_name, str):
            got = "null" if type_name is None else f"{type(type_name).__name__} {type_name!r}"
            self.problem((*path, "type"), f"expected a type name, got {got}: one of the {'/'.join(kinds)} types ({_few(self.catalogue, kinds)})")
            return None
        if not isinstance(type_name, str):
            misspelt = next((f" (is {key!r} it?)" for key in raw if key != "type" and suggest(str(key), ["type"])), "")
            self.problem(path, f"missing `type`{misspelt}: one of the {'/'.join(kinds)} types ({_few(self.catalogue, kinds)})")
            return None
        if type_name not in self.catalogue:
            self.problem((*path, "type"), self.catalogue.unknown_type_message(type_name, kinds))
            return None
        component_type = self.catalogue.get(type_name)
        if component_type.kind not in kinds:
            self.problem(
                (*path, "type"),
                f"{type_name!r} is {_a(component_type.kind)}, expected {' or '.join(map(_a, kinds))}",
            )
            return None
        fields = {k: v for k, v in raw.items() if k != "type"}
        try:
            params = component_type.params.model_validate(fields)
        except ValidationError as error:
            defaults_said: set[Any] = set()
            for item in error.errors():
                name = item["loc"][0] if item["loc"] else None
                if name is not None and name not in fields and item["type"] != "missing":  # the plugin's own default
                    if name not in defaults_said:  # once per field, not per branch of a union
                        defaults_said.add(name)
                        self.problem(path, _bad_default(origin(type_name, self.catalogue), component_type.params, str(name), item))
                    continue
                message = _message(item, component_type.params)
                if item["type"] == "extra_forbidden" and type_name in self.catalogue.shadowed:
                    others = ", ".join(map(repr, self.catalogue.shadowed[type_name]))
                    message += f" ({origin(type_name, self.catalogue)}; plugin {others} registers a {type_name!r} too, not used: rename it there)"
                self.problem((*path, *error_location(fields, item)), message)
            return None
        except (Exception, SystemExit) as error:  # a validator of the plugin's that raised something pydantic does not catch
            self.problem(path, f"{origin(type_name, self.catalogue)} failed to validate its parameters: {described(error)}")
            return None
        declared = Declared(name, component_type, params, path)
        self._lift_refs(declared)
        return declared

    def _lift_refs(self, declared: Declared) -> None:
        for field, marker in ref_fields(type(declared.params)):
            value = getattr(declared.params, field)
            if isinstance(marker, LossRef) and value is not None:
                self.loss_refs.append((value, (*declared.path, field)))
            if not isinstance(marker, RefTo):
                continue
            if value is None:
                continue
            is_list = isinstance(value, list)
            items = list(value) if is_list else [value]
            resolved = []
            for i, item in enumerate(items):
                path = (*declared.path, field, i) if is_list else (*declared.path, field)
                label = f"{declared.name}.{field}" + (f"[{i}]" if is_list else "")
                if isinstance(item, dict):
                    taken = self.components.get(label)
                    if taken is not None:  # a loss named `sample`, and the sampler, each with an inline `flow`
                        self.problem(
                            path, f"this inline definition is named {label!r}, as is the one at {format_path(taken.path)}, "
                            "which it would replace: rename the component or loss whose name begins it"
                        )
                        resolved.append(label)
                        continue
                    child = self.declare(label, item, marker.kinds, path)
                    if child is not None:
                        child.inline = True
                        self.components[label] = child
                    resolved.append(label)
                else:
                    self.pending_refs.append((item, marker.kinds, path))
                    resolved.append(item)
            declared.params.__dict__[field] = resolved if is_list else resolved[0]  # not setattr: a plugin's model may be frozen

    def check_refs(self) -> None:
        for name, kinds, path in self.pending_refs:
            target = self.components.get(name)
            if name in self.invalid:
                continue
            if target is None and name in self.other_names:  # was "unknown component 'fake'", though the spec defines it
                self.problem(path, f"{name!r} is {self.other_names[name]}, not a component: name {' or '.join(map(_a, kinds))} under components:, or define one inline here")
            elif target is None:
                self.problem(path, f"unknown component {name!r}{suggest(name, self.components)}")
            elif target.inline:  # its definition stays where it is written: the run's spec.yaml would build a second one here
                self.problem(path, f"{name!r} is defined inline in {_owner(name)!r}; to use it here too, {_declare_apart(name)} and here")
            elif target.kind not in kinds:
                self.problem(path, f"{name!r} is {_a(target.kind)}, expected {' or '.join(map(_a, kinds))}")

    def check_loss_refs(self, losses: Iterable[str]) -> None:
        """Fields typed ``LossName`` name a loss under ``losses:``."""
        known = list(losses)
        for name, path in self.loss_refs:
            if name not in known:
                self.problem(path, f"unknown loss {name!r}{suggest(name, known)}; losses: {', '.join(known) or 'none'}")

    def check_averaged(self, names: list[str]) -> None:
        """``train.ema.components`` name components declared under ``components:`` (inline ones are averaged with their parent)."""
        top_level = {n for n, d in self.components.items() if not d.inline}
        for i, name in enumerate(names):
            path = ("train", "ema", "components", i)
            if name in self.components and name not in top_level:
                owner = _owner(name)
                remedy = f"average {owner!r}, whose parameters include it" if owner in top_level else f"to average it, {_declare_apart(name)}"
                self.problem(path, f"{name!r} is defined inline in {owner!r}; {remedy}")
            elif name not in top_level and name not in self.invalid:
                self.problem(path, f"unknown component {name!r}{suggest(name, top_level)}")


def _owner(inline: str) -> str:
    """The component, loss, sampler or metric whose definition holds the inline component named ``inline``."""
    return inline.split(".")[0]


def _declare_apart(inline: str) -> str:
    field = inline.split(".", 1)[1]
    return f"declare it under components: and name it in {_owner(inline)}'s {field}"


def resolve_sections(model: SpecModel, catalogue: Catalogue) -> Sections:
    """Validate the typed sections of ``model``; raise :class:`SpecError` with every problem."""
    resolver = _Resolver(catalogue)
    resolver.other_names = {**{name: "a graph value" for name in model.graph}, **{name: "a loss" for name in model.losses}}
    data = resolver.declare("data", model.data, ("dataset",), ("data",)) if model.data is not None else None
    for name, raw in model.components.items():
        problem = _name_problem(name, "component")
        if problem is not None:
            resolver.problem(("components", name), problem)
            resolver.invalid.add(name)
            continue
        declared = resolver.declare(name, raw, COMPONENT_KINDS, ("components", name))
        if declared is not None:
            resolver.components[name] = declared
        else:
            resolver.invalid.add(name)
    for name in model.graph:
        if not IDENTIFIER.match(name):
            resolver.problem(("graph", name), f"value {_IDENTIFIER_RULE}")
        elif name in model.components:  # was "names used both as component and graph value: [...]" at line 1, no path
            resolver.problem(("graph", name), f"{name!r} names a component too (components.{name}): give this graph value another name")
    losses = {}
    for name, raw in model.losses.items():
        problem = _name_problem(name, "loss")
        if problem is None and name in LOG_RECORD_KEYS:
            problem = f"{name!r} is taken: every line of the training log holds a {name!r} of its own, which the loss's would overwrite; choose another"
        if problem is not None:
            resolver.problem(("losses", name), problem)
            continue
        declared = resolver.declare(name, raw, ("loss",), ("losses", name))
        if declared is not None:
            losses[name] = declared
    sampler = None
    if model.sample is not None:
        sampler = resolver.declare("sample", model.sample, ("sampler",), ("sample",))
    metrics = []
    for i, raw in enumerate(model.evaluate.metrics):
        declared = resolver.declare(f"metric{i}", raw, ("metric",), ("evaluate", "metrics", i))
        if declared is not None:
            metrics.append(declared)
    resolver.check_refs()
    resolver.check_loss_refs(model.losses)
    if model.train.ema is not None:
        resolver.check_averaged(model.train.ema.components)
    if resolver.problems:
        raise SpecError(resolver.problems)
    return Sections(data, resolver.components, losses, sampler, metrics)


def _a(noun: str) -> str:
    """``an encoder``, ``a decoder``."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def origin(type_name: str, catalogue: Catalogue) -> str:
    """``type 'mlp' (plugin 'networks')``: where the code behind a declaration comes from."""
    return f"type {type_name!r} (plugin {catalogue.plugin_of.get(type_name, '?')!r})"


def _few(catalogue: Catalogue, kinds: tuple[str, ...]) -> str:
    names = sorted(t.name for t in catalogue.of_kind(*kinds))
    return ", ".join(names[:8]) + (", …" if len(names) > 8 else "") if names else "none registered"


def _bad_default(where: str, params: type[Params], name: str, item: dict[str, Any]) -> str:
    """A parameter whose default its own field refuses: the plugin's mistake, said as such."""
    field = params.model_fields.get(name)
    refused_by_type = item["type"] not in ("value_error", "assertion_error")  # not the plugin's own validator
    if field is not None and field.default is None and refused_by_type and type(None) not in get_args(field.annotation):
        return f"{where}: {name} defaults to None, which its annotation does not accept: the plugin should annotate it Optional[...]"
    if item["type"] == "finite_number":  # Params refuse ±inf and NaN unless the field opts in
        return (
            f"{where}: {name} defaults to {item['input']}, which its field refuses, as every float of Params does unless it opts in: "
            f"the plugin should declare it `{name}: float = Field({_float_literal(item['input'])}, allow_inf_nan=True)` "
            f"(or `float | None = None`); meanwhile set {name} in the spec"
        )
    return f"{where}: the default of {name} is invalid ({pydantic_message(item)}); set {name} in the spec, and tell the plugin's authors"


def _float_literal(value: float) -> str:
    """``math.inf``, ``-math.inf`` or ``math.nan``: how a plugin's Python spells a non-finite default."""
    return "math.nan" if value != value else f"{'-' if value < 0 else ''}math.inf"


def _message(item: dict[str, Any], params: type[Params]) -> str:
    if item["type"] == "extra_forbidden":
        field = str(item["loc"][-1])
        hint = suggest(field, params.model_fields)
        held = item.get("input")
        if not hint and isinstance(held, dict) and isinstance(held.get("type"), str):  # `decoder:` indented under `encoder:`
            hint = f"; it holds a definition of type {held['type']!r}: indented one level too deep? (an entry of its own goes one level up)"
        return f"unknown parameter {field!r}{hint}"
    if item["type"] == "missing":
        return "required parameter is missing"
    return pydantic_message(item)


def pydantic_message(item: dict[str, Any]) -> str:
    """The message of one pydantic error, reworded where pydantic's wording says too little."""
    if item["type"] == "finite_number":
        return f"must be a finite number, not {item['input']}"
    if item["type"] == "string_type" and isinstance(item.get("input"), (int, float)) and not isinstance(item["input"], bool):
        return f"{item['msg']}, got the number {item['input']!r}: for the text, quote it ('{item['input']}')"  # `name: 2024` reads as a number
    if item["type"] == "model_type":
        return f"expected a mapping, got {type(item['input']).__name__} {item['input']!r}"
    if item["type"] == "value_error":
        return str(item["ctx"]["error"])
    if item["type"] == "union_tag_invalid":  # pydantic: "Input tag 'sgdd' found using tag() does not match ..."
        tag, tags = str(item["ctx"]["tag"]), re.findall(r"'([^']*)'", str(item["ctx"]["expected_tags"]))
        return f"unknown type {tag!r}{suggest(tag, tags)} (the types here: {', '.join(tags)})"
    return item["msg"]


def error_location(data: Any, item: dict[str, Any]) -> tuple[PathPart, ...]:
    """The spec path of one pydantic error: :func:`error_path`, down to the ``type`` key of a union whose type is unknown
    (so an override of that key is blamed, not the file's line of the section)."""
    path = error_path(data, item["loc"], missing=item["type"] == "missing")
    if item["type"] == "union_tag_invalid" and isinstance(item.get("input"), dict) and "type" in item["input"]:
        return (*path, "type")
    return path


_ABSENT = object()


def error_path(data: Any, loc: tuple[Any, ...], *, missing: bool) -> tuple[PathPart, ...]:
    """The spec path, within ``data``, of a pydantic error location.

    Parts that are no key or index of the data are tags pydantic inserts, of a
    discriminated union (``optimizer.adam.lr``) or of a union member, and are
    dropped; the last part of a missing-key error is the key that is missing, and kept.
    """
    path = []
    for i, part in enumerate(loc):
        child = _child(data, part)
        if child is _ABSENT and not (missing and i == len(loc) - 1):
            continue
        path.append(part)
        data = child
    return tuple(path)


def _child(data: Any, part: Any) -> Any:
    if isinstance(data, dict):
        return data.get(part, _ABSENT)
    if isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
        return data[part]
    return _ABSENT
