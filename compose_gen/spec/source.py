"""Safe loading of YAML and JSON specs, remembering the line of every value.

* YAML is composed with PyYAML's safe machinery and constructed by hand: only
  plain mappings, sequences and scalars exist; tags that build objects are
  refused, a duplicated key is an error, plain scalars read as YAML 1.2 reads
  them (``1e-4`` is a float, ``on`` and ``no`` are words, a date is its text,
  where YAML 1.1 makes a string, booleans and a timestamp), merge keys
  (``<<: *defaults``) merge, and alias expansion is bounded so alias bombs fail fast.
* JSON is parsed by :mod:`json` (a trailing comma is an error with its line);
  lines of values are then read from the same text through the YAML composer.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from compose_gen.core.files import TEXT_LIMIT, read_text_file
from compose_gen.spec.errors import PathPart, Problem, SpecError

__all__ = ["SpecSource", "load_source", "parse_text", "source_of_mapping"]

MAX_NODES = 100_000
_TOO_DEEP = "the spec is nested too deeply to parse"
_TOO_MANY_DIGITS = f"an integer of more than {sys.get_int_max_str_digits()} digits, more than any setting needs or Python reads"

_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads plain scalars as YAML 1.2 does: ``1e-4`` and ``1E5`` are floats, only ``true`` and
    ``false`` are booleans (``on``, ``yes`` and ``no`` are the words), and a date is its text."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:float", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_MERGE = "tag:yaml.org,2002:merge"

_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}


@dataclass
class SpecSource:
    """Plain data loaded from a spec plus the line of each spec path."""

    name: str
    data: Any
    lines: dict[tuple[PathPart, ...], int] = field(default_factory=dict)
    #: Paths set from the command line, reported as ``--set`` instead of a line.
    overridden: set[tuple[PathPart, ...]] = field(default_factory=set)

    def locate(self, path: Sequence[PathPart]) -> tuple[str, int]:
        """``--set`` for a path at or below an override, else the line of its nearest located ancestor,
        as ``file:line with --set`` (line 0) when an override lies below the path (a part, one of whose values was set)
        or sets the ``type`` of a mapping that holds it (which another type's parameters no longer fit)."""
        path = tuple(path)
        prefixes = [path[:end] for end in range(len(path), -1, -1)]
        if any(prefix in self.overridden for prefix in prefixes):
            return "--set", 0
        line = next((self.lines[prefix] for prefix in prefixes if prefix in self.lines), 1)
        retyped = [set_path[:-1] for set_path in self.overridden if set_path[-1:] == ("type",)]
        if (path and any(set_path[: len(path)] == path for set_path in self.overridden)) or any(path[: len(owner)] == owner for owner in retyped):
            return f"{self.name}:{line} with --set", 0
        return self.name, line


def load_source(path: str | Path) -> SpecSource:
    """Read and parse a ``.yaml``/``.yml``/``.json`` spec file, or ``-``: YAML (or JSON, which YAML reads) from stdin."""
    if str(path) == "-":
        text = sys.stdin.read(TEXT_LIMIT + 1)  # bounded as a file is: `yes | compose-gen validate -` ends
        if len(text) > TEXT_LIMIT:
            raise SpecError([Problem((), f"cannot read <stdin>: more than {TEXT_LIMIT // 2**20} MiB, far beyond any spec")])
        return parse_text(text, "<stdin>")
    path = Path(path)
    try:
        text = read_text_file(path, regular=False)  # the user's own path, maybe a pipe; a run folder's is checked as such
    except OSError as error:
        raise SpecError([Problem((), f"cannot read {path}: {error.strerror or error}")]) from None
    except UnicodeDecodeError as error:
        raise SpecError([Problem((), f"cannot read {path}: {error}")]) from None
    return parse_text(text, str(path), json_syntax=path.suffix.lower() == ".json")


def source_of_mapping(spec: Mapping[str, Any]) -> SpecSource:
    """A spec given as a Python mapping, copied into plain data of its own, as a file would be read.

    The copy shares no container with the caller's, nor two places of it one container (as YAML's
    anchors are expanded): a caller who edits its mapping after loading, as a sweep does, or an
    override of one place, changes no other spec and no other place.  Numpy scalars and arrays become
    Python numbers and lists, paths and tuples the strings and lists YAML writes; any other object is
    refused at its path, since the run folder keeps the spec as YAML.
    """
    problems: list[Problem] = []
    data = _plain(spec, (), problems, set())
    if problems:
        raise SpecError(problems, SpecSource("<dict>", None))
    return SpecSource("<dict>", data)


def _plain(value: Any, path: tuple[PathPart, ...], problems: list[Problem], open_: set[int]) -> Any:
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, np.generic) and type(value.item()) in (bool, int, float, str):  # np.float64 is a float too: as Python's
        return value.item()
    if isinstance(value, (bool, int, float, str)) and not isinstance(value, Enum):  # a subclass of its own, as YAML writes it
        return next(plain(value) for plain in (bool, int, float, str) if isinstance(value, plain))
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), path, problems, open_)
    if not isinstance(value, (Mapping, list, tuple)):
        problems.append(Problem(path, f"holds a {type(value).__name__}; a spec holds what YAML writes: numbers, strings, booleans, null, lists and mappings"))
        return None
    if id(value) in open_:
        problems.append(Problem(path, "holds the mapping or list it is part of, which has no finite value"))
        return None
    open_.add(id(value))
    try:
        if isinstance(value, Mapping):
            keys = [key for key in value if not isinstance(key, (str, int, float)) and key is not None]
            if keys:
                problems.append(Problem(path, f"has the key {keys[0]!r}, a {type(keys[0]).__name__}; the keys of a spec are strings"))
                return None
            # a number as a key is its text, as the YAML reader makes it
            return {str(key): _plain(item, (*path, str(key)), problems, open_) for key, item in value.items()}
        return [_plain(item, (*path, i), problems, open_) for i, item in enumerate(value)]
    finally:
        open_.discard(id(value))


def parse_text(text: str, name: str = "<spec>", *, json_syntax: bool = False) -> SpecSource:
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors write, which YAML skips and json refuses
    if json_syntax:
        return _parse_json(text, name)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as error:
        raise SpecError([Problem((), _yaml_message(error))], _FixedLine(name, _yaml_line(error))) from None
    except RecursionError:
        raise SpecError([Problem((), _TOO_DEEP)], _FixedLine(name, 1)) from None
    if node is None:
        return SpecSource(name, {}, {})
    try:
        data, lines = _Builder(name).build(node)
    except RecursionError:
        raise SpecError([Problem((), _TOO_DEEP)], _FixedLine(name, 1)) from None
    return SpecSource(name, data, lines)


class _DuplicatedKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(items: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in items:
        if key in seen:
            raise _DuplicatedKey(key)
        seen[key] = value
    return seen


def _parse_json(text: str, name: str) -> SpecSource:
    """JSON parsed by :mod:`json`; the lines of its values (and of a duplicated key) read as YAML."""
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicatedKey as error:
        _json_lines(text, name)  # raises the duplicate with its path and line
        raise SpecError([Problem((), f"duplicated key {error.key!r}")], _FixedLine(name, 1)) from None
    except json.JSONDecodeError as error:
        raise SpecError([Problem((), f"invalid JSON: {error.msg} (column {error.colno})")], _FixedLine(name, error.lineno)) from None
    except ValueError:  # an integer of more digits than Python converts
        raise SpecError([Problem((), f"a number in it: {_TOO_MANY_DIGITS}")], _FixedLine(name, 1)) from None
    except RecursionError:
        raise SpecError([Problem((), _TOO_DEEP)], _FixedLine(name, 1)) from None
    return SpecSource(name, data, _json_lines(text, name))


def _json_lines(text: str, name: str) -> dict[tuple[PathPart, ...], int]:
    """The line of every value of a JSON text, through the YAML composer; a duplicated key raises with its line.

    Outside strings JSON's tabs are whitespace, which YAML 1.1 does not indent
    with, so they are read as spaces (a valid JSON string holds no raw tab).
    """
    try:
        node = yaml.compose(text.replace("\t", " "), Loader=_Loader)
        return _Builder(name).build(node)[1] if node is not None else {}
    except (yaml.YAMLError, RecursionError):
        return {}


@dataclass
class _FixedLine:
    name: str
    line: int

    def locate(self, path: Sequence[PathPart]) -> tuple[str, int]:
        return self.name, max(self.line, 1)


def _yaml_line(error: yaml.YAMLError) -> int:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    return mark.line + 1 if mark is not None else 1


#: What usually causes PyYAML's terse problems, said after them.
_YAML_CAUSES = {
    "found character '\\t' that cannot start any token": "YAML indents with spaces, not tabs: replace the tab",
    "mapping values are not allowed here": "a `key:value` without a space after the colon, on this line or the one above, "
    "or a line indented deeper than the key before it?",
    "expected <block end>, but found": "this line's indentation matches no key above it: indent it as far as its siblings",
}


def _yaml_message(error: yaml.YAMLError) -> str:
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    cause = next((said for start, said in _YAML_CAUSES.items() if problem.startswith(start)), None)
    mark = getattr(error, "problem_mark", None)
    column = f", column {mark.column + 1}" if mark is not None else ""
    return f"invalid YAML{column}: {problem}" + (f" ({context})" if context else "") + (f": {cause}" if cause else "")


class _Builder:
    """Turns a composed YAML node tree into plain data and a line map."""

    def __init__(self, name: str = "<spec>") -> None:
        self.name = name
        self.count = 0
        #: Characters of the scalars built so far: aliases to one long string repeat it without a node more each.
        self.chars = 0
        self.lines: dict[tuple[PathPart, ...], int] = {}
        self.scalars = _Loader("")
        #: The collections being built, outermost first: an alias to one of them would contain itself.
        self.open: set[int] = set()

    def build(self, node: yaml.Node) -> tuple[Any, dict[tuple[PathPart, ...], int]]:
        return self._node(node, ()), self.lines

    def _fail(self, node: yaml.Node, path: tuple[PathPart, ...], message: str) -> SpecError:
        return SpecError([Problem(path, message)], _FixedLine(self.name, node.start_mark.line + 1))

    def _node(self, node: yaml.Node, path: tuple[PathPart, ...]) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self._fail(node, path, f"the spec expands to more than {MAX_NODES} values (alias bomb?)")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.CollectionNode):
            if id(node) in self.open:
                raise self._fail(node, path, "an alias inside the value it names (a recursive alias) has no finite value")
            self.open.add(id(node))
            try:
                return self._collection(node, path)
            finally:
                self.open.discard(id(node))
        if node.tag not in _PLAIN_TAGS:
            raise self._fail(node, path, f"tag {node.tag!r} is not allowed in a spec")
        self.chars += len(node.value)
        if self.chars > TEXT_LIMIT:
            raise self._fail(node, path, f"the spec expands to more than {TEXT_LIMIT // 2**20} MiB of text (alias bomb?)")
        try:
            return self.scalars.construct_object(node)
        except ValueError:  # an integer of more digits than Python converts
            raise self._fail(node, path, f"{node.value[:12]}...: {_TOO_MANY_DIGITS}") from None

    def _collection(self, node: yaml.CollectionNode, path: tuple[PathPart, ...]) -> Any:
        if isinstance(node, yaml.MappingNode):
            if node.tag != "tag:yaml.org,2002:map":
                raise self._fail(node, path, f"tag {node.tag!r} is not allowed in a spec")
            result: dict[str, Any] = {}
            merged: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE:  # `<<: *defaults`: the keys of that mapping, unless this one sets them
                    for key, value in self._merged(value_node, path).items():
                        merged.setdefault(key, value)
                    continue
                key = self._node(key_node, path)
                if not isinstance(key, (str, int, float, bool)) or key is None:
                    raise self._fail(key_node, path, "mapping keys must be plain scalars")
                key = str(key)
                if key in result:
                    raise self._fail(key_node, (*path, key), f"duplicated key {key!r}")
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                result[key] = self._node(value_node, (*path, key))
            return {**{k: v for k, v in merged.items() if k not in result}, **result}
        if isinstance(node, yaml.SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                raise self._fail(node, path, f"tag {node.tag!r} is not allowed in a spec")
        return [self._node(item, (*path, i)) for i, item in enumerate(node.value)]

    def _merged(self, node: yaml.Node, path: tuple[PathPart, ...]) -> dict[str, Any]:
        """What a merge key brings in: a mapping, or a list of them, the earlier taking precedence."""
        nodes = node.value if isinstance(node, yaml.SequenceNode) else [node]
        merged: dict[str, Any] = {}
        for item in nodes:
            if not isinstance(item, yaml.MappingNode):
                raise self._fail(item, path, "`<<` merges a mapping (`<<: *name`) or a list of them into this one")
            for key, value in self._node(item, path).items():
                merged.setdefault(key, value)
        return merged
