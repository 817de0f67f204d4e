"""Dotted command-line overrides: ``--set train.steps=100 --set components.prior.shape=[8]``.

A key is a dotted path; list entries are chosen by index, written
``bijectors[0]`` or ``bijectors.0``, and a key that holds a dot is quoted,
``players.critic.terms."adv.critic"``.  Values are parsed as YAML scalars or flow
collections (so ``1e-4`` is a float and ``[64, 64]`` a list); the result is
validated like the file itself, and problems in overridden values are reported
as coming from ``--set``.

Setting the ``type`` of a typed mapping (an optimizer, a schedule, a
component...) to another type also removes the old type's parameters that the
new type does not take and that hold the old type's defaults: a run folder's
``spec.yaml`` has every default written out, and those were not the user's
choice.  Parameters set to anything else stay, and are reported if the new type
does not take them.
"""

from __future__ import annotations

import copy
import difflib
import re
from typing import Any, Callable, Iterable

from pydantic import BaseModel
from pydantic_core import PydanticUndefined, to_jsonable_python

from compose_gen.spec.errors import PathPart, Problem, SpecError, format_path
from compose_gen.spec.model import NAMED_SECTIONS
from compose_gen.spec.source import SpecSource, parse_text

__all__ = ["ModelOf", "apply_overrides"]

#: The pydantic model that validates a mapping of type ``type_name`` at a spec path, if known.
ModelOf = Callable[[tuple[PathPart, ...], str], "type[BaseModel] | None"]

_SEGMENT = re.compile(r"""(?:"([^"]+)"|'([^']+)'|([^.\[\]"']+))((?:\[[0-9]+\])*)(\.|$)""")
_INDEX = re.compile(r"\[([0-9]+)\]")


class _OverrideError(Exception):
    """An override that cannot be applied to the spec's data."""


def apply_overrides(source: SpecSource, overrides: Iterable[str], model_of: ModelOf | None = None) -> SpecSource:
    """Return a copy of ``source`` with each ``key.path=value`` applied."""
    data = copy.deepcopy(source.data)
    overridden = set(source.overridden)
    problems = []
    for text in overrides:
        key, sep, raw = text.partition("=")
        path = parse_key(key)
        if not sep or not path:
            problems.append(
                Problem((), f"override {text!r} is not of the form key.path=value (list entries: name[0] or name.0; a key with a dot: \"a.b\")")
            )
            continue
        try:
            parsed = parse_text(f"value: {raw}", "--set").data
        except SpecError as error:
            said = re.sub(r"^invalid YAML, column \d+:", "invalid YAML:", error.problems[0].message)  # a column of "value: ...", not of raw
            problems.append(Problem(path, f"cannot parse override value {raw!r}: {said}"))
            continue
        if set(parsed) != {"value"}:  # a line break in it began a key of its own, which would be dropped
            problems.append(Problem(path, f"override value {raw!r} holds more than one value; set each key with a --set of its own"))
            continue
        value = parsed["value"]
        if not raw.strip():
            problems.append(Problem(path, "no value after '=': give one (null for none)"))
            continue
        slip = _colon_without_space(value)
        if slip is not None:
            problems.append(Problem(path, f"{slip!r} reads as one key: in YAML a colon needs a space after it ({slip.replace(':', ': ', 1)})"))
            continue
        try:
            overridden |= _assign(data, path, value, model_of)
        except _OverrideError as error:
            problems.append(Problem(path, str(error)))
    if problems:
        raise SpecError(problems, _Overrides())
    return SpecSource(source.name, data, source.lines, overridden)


def _colon_without_space(value: Any) -> str | None:
    """A key of a mapping in ``value`` written ``key:value`` with no space, which YAML reads as the key ``'key:value'``."""
    if isinstance(value, dict):
        for key, item in value.items():
            if item is None and isinstance(key, str) and re.fullmatch(r"[A-Za-z_][\w.]*:\S+", key):
                return key
            found = _colon_without_space(item)
            if found is not None:
                return found
    if isinstance(value, list):
        return next((found for item in value if (found := _colon_without_space(item)) is not None), None)
    return None


def parse_key(key: str) -> tuple[PathPart, ...] | None:
    """``components.flow.bijectors[0].hidden`` → ``("components", "flow", "bijectors", 0, "hidden")``; None if malformed.

    A dotted number (``bijectors.0``) stays a string here: it is an index only where the data holds a list.
    A quoted segment (``terms."adv.critic"``) is one key, dots and all.
    """
    key = key.strip()
    path: list[PathPart] = []
    position = 0
    while position < len(key):
        match = _SEGMENT.match(key, position)
        if match is None or (match.group(5) == "." and match.end() == len(key)):
            return None
        double, single, bare, indices, _ = match.groups()
        path.append(next(part for part in (double, single, bare) if part is not None))
        path += [int(index) for index in _INDEX.findall(indices)]
        position = match.end()
    return tuple(path) or None


def _assign(data: Any, path: tuple[PathPart, ...], value: Any, model_of: ModelOf | None) -> set[tuple[PathPart, ...]]:
    """Set ``value`` at ``path`` in ``data``; return the paths the override wrote, list indices as numbers.

    Those are the path itself and every mapping created on the way, so problems
    found in them are blamed on ``--set``.
    """
    node, done, written = data, (), set()
    for depth, part in enumerate(path[:-1]):
        key = _key_in(node, part, done)
        if isinstance(node, dict) and key not in node:
            _refuse_unquoted_dots(node, path[depth:], done)
        done = (*done, key)
        if isinstance(node, list) and isinstance(node[key], str) and done[-2:-1] in (("metrics",), ("transforms",)):
            node[key] = {"type": node[key]}  # a metric or transform given by its name alone is {type: NAME}: set a key in it
        if isinstance(node, dict) and node.get(key) is None:
            node[key] = _new_mapping(path[depth + 1], done, node)
            written.add(done)
        node = node[key]
    key = _key_in(node, path[-1], done)
    if key == "type" and isinstance(node, dict) and model_of is not None:
        _drop_old_type_defaults(node, value, done, model_of)
    node[key] = value
    return written | {(*done, key)}


def _refuse_unquoted_dots(node: dict[str, Any], rest: tuple[PathPart, ...], where: tuple[PathPart, ...]) -> None:
    """Refuse a path whose next parts, joined by dots, name a key of ``node`` (``terms.adv.critic`` for the key
    ``adv.critic``), which the override would otherwise create as a mapping beside it."""
    for end in range(2, len(rest) + 1):
        dotted = ".".join(map(str, rest[:end]))
        if dotted in node:
            key = ".".join([format_path(where), f'"{dotted}"', *map(str, rest[end:])]).lstrip(".")
            raise _OverrideError(f"{format_path(where)} has the key {dotted!r}, which holds a dot: quote it, --set '{key}=...'")


def _key_in(node: Any, part: PathPart, where: tuple[PathPart, ...]) -> PathPart:
    """The key or index that ``part`` names in ``node`` (reached by ``where``)."""
    here = format_path(where)
    if isinstance(node, list):
        index = part if isinstance(part, int) else int(part) if _is_index(part) else None
        if index is None:
            raise _OverrideError(f"{here} is a list: choose an entry by index, as in {here}[0], not {part!r}")
        if index >= len(node):
            raise _OverrideError(f"index {index} out of range ({here} has {len(node)} entries)")
        return index
    if isinstance(node, dict) and not isinstance(part, int):
        return part
    if isinstance(node, dict):
        raise _OverrideError(f"{here} is a mapping, not a list: it has no entry [{part}]")
    if isinstance(part, int):
        raise _OverrideError(f"{here} is {_describe(node)}, not a list: it has no entry [{part}]")
    raise _OverrideError(f"cannot set a key inside {here}, which is {_describe(node)}, not a mapping")


def _new_mapping(next_part: PathPart, where: tuple[PathPart, ...], siblings: dict[str, Any]) -> dict[str, Any]:
    """The empty mapping an override creates at a missing key on its way.

    A list cannot be created by index; a key within a typo of an existing one
    (``data.sourc``) is taken for that typo; and a new entry of a section of
    named entries (``players.D.steps``) is refused: it would be a partial entry,
    and the errors about it would blame the spec rather than ``--set``.
    """
    here = format_path(where)
    if isinstance(next_part, int):
        raise _OverrideError(f"{here} does not exist: set the whole list ({here}=[...])")
    names = [k for k in siblings if isinstance(k, str)]
    close = difflib.get_close_matches(str(where[-1]), names, n=1, cutoff=0.8)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    if len(where) == 2 and where[0] in NAMED_SECTIONS:
        existing = ", ".join(repr(name) for name in names) or "none"
        raise _OverrideError(
            f"{where[0]} has no entry {where[-1]!r} (it has {existing}){hint}; a new entry is set whole, "
            f"not key by key: --set '{here}={NAMED_SECTIONS[where[0]]}'"
        )
    if close:
        raise _OverrideError(f"{here} does not exist{hint} (to add it, set it whole: {here}={{...}})")
    return {}


def _describe(value: Any) -> str:
    return "absent" if value is None else f"{type(value).__name__} {value!r}"


def _drop_old_type_defaults(mapping: dict[str, Any], new_type: Any, where: tuple[PathPart, ...], model_of: ModelOf) -> None:
    """Before ``mapping``'s type changes, remove the old type's defaults that the new type does not take."""
    old_type = mapping.get("type")
    if not isinstance(old_type, str) or not isinstance(new_type, str) or old_type == new_type:
        return
    old_model, new_model = model_of(where, old_type), model_of(where, new_type)
    if old_model is None or new_model is None:
        return
    old_defaults = _defaults(old_model)
    for key in [k for k in mapping if k != "type" and k not in new_model.model_fields and k in old_defaults]:
        if mapping[key] == old_defaults[key]:
            del mapping[key]


def _defaults(model: type[BaseModel]) -> dict[str, Any]:
    """The model's default values, as a resolved spec writes them (tuples as lists, ...)."""
    defaults = {}
    for name, info in model.model_fields.items():
        if info.default_factory_takes_validated_data:  # a default computed from the other parameters
            continue
        default = info.get_default(call_default_factory=True)
        if default is not PydanticUndefined:
            defaults[name] = to_jsonable_python(default)
    return defaults


def _is_index(part: PathPart) -> bool:
    """ASCII digits only: ``"²".isdigit()`` is true, yet ``int("²")`` fails."""
    return isinstance(part, str) and part.isascii() and part.isdigit()


class _Overrides:
    def locate(self, path: Any) -> tuple[str, int]:
        return "--set", 0
