"""Dotted command-line overrides: ``--set train.steps=100 --set components.prior.shape=[8]``.

Values are parsed as YAML scalars or flow collections (so ``1e-4`` is a float and
``[64, 64]`` a list); the result is validated like the file itself, and problems
in overridden values are reported as coming from ``--set``.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

from compose_gen.spec.errors import PathPart, Problem, SpecError
from compose_gen.spec.source import SpecSource, parse_text

__all__ = ["apply_overrides"]


def apply_overrides(source: SpecSource, overrides: Iterable[str]) -> SpecSource:
    """Return a copy of ``source`` with each ``key.path=value`` applied."""
    data = copy.deepcopy(source.data)
    overridden = set(source.overridden)
    problems = []
    for text in overrides:
        key, sep, raw = text.partition("=")
        path = tuple(part for part in key.strip().split(".") if part)
        if not sep or not path:
            problems.append(Problem((), f"override {text!r} is not of the form key.path=value"))
            continue
        try:
            value = parse_text(f"value: {raw}", "--set").data["value"]
        except SpecError as error:
            problems.append(Problem(path, f"cannot parse override value {raw!r}: {error.problems[0].message}"))
            continue
        error_message = _assign(data, path, value)
        if error_message:
            problems.append(Problem(path, error_message))
        overridden.add(path)
    if problems:
        raise SpecError(problems, _Overrides())
    return SpecSource(source.name, data, source.lines, overridden)


def _assign(data: Any, path: tuple[str, ...], value: Any) -> str | None:
    node = data
    for depth, part in enumerate(path[:-1]):
        key: PathPart = int(part) if isinstance(node, list) and _is_index(part) else part
        if isinstance(node, dict):
            node = node.setdefault(key, {})
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return f"cannot set a key inside {'.'.join(path[: depth + 1])!r}, which is not a mapping"
    last = path[-1]
    if isinstance(node, list) and _is_index(last) and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        return f"cannot set {'.'.join(path)!r}: its parent is not a mapping"
    return None


def _is_index(part: str) -> bool:
    """ASCII digits only: ``"²".isdigit()`` is true, yet ``int("²")`` fails."""
    return part.isascii() and part.isdigit()


class _Overrides:
    def locate(self, path: Any) -> tuple[str, int]:
        return "--set", 0
