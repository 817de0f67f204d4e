"""Spec problems that point at ``file:line: spec.path``.

Every user-facing error about a spec is a :class:`SpecError` holding one
:class:`Problem` per mistake, so ``compose-gen validate`` can report them all
at once instead of stopping at the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

__all__ = ["Location", "Problem", "SpecError", "SpecWarning", "format_path"]

PathPart = str | int


def format_path(path: Sequence[PathPart]) -> str:
    """``("components", "flow", "bijectors", 3, "hidden")`` → ``components.flow.bijectors[3].hidden``, as ``--set`` reads
    it: a key holding a dot, a bracket or a quote is quoted (``players.critic.terms."adv.critic"``)."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{_key(part)}" if text else _key(part))
    return text or "<spec>"


def _key(part: str) -> str:
    if part and not re.search(r"""[.\[\]"']""", part):
        return part
    return f"'{part}'" if '"' in part else f'"{part}"'


class Location(Protocol):
    """Maps a spec path to ``(file, line)``; implemented by the loaded source."""

    def locate(self, path: Sequence[PathPart]) -> tuple[str, int]: ...


@dataclass(frozen=True)
class Problem:
    path: tuple[PathPart, ...]
    message: str

    def format(self, where: Location | None = None) -> str:
        prefix = ""
        if where is not None:
            file, line = where.locate(self.path)
            prefix = f"{file}:{line}: " if line else f"{file}: "  # line 0: not in a file (--set)
        if not self.path:  # the whole file: its name says where
            return f"{prefix}{self.message}" if prefix else self.message
        return f"{prefix}{format_path(self.path)}: {self.message}"


class SpecError(Exception):
    """One or more problems with a spec; ``str()`` gives one line per problem."""

    def __init__(self, problems: Iterable[Problem], where: Location | None = None) -> None:
        self.problems = list(problems)
        self.where = where
        super().__init__(str(self))

    def located(self, where: Location) -> "SpecError":
        """The same problems, pointed at ``where`` unless already located."""
        return self if self.where is not None else SpecError(self.problems, where)

    def __str__(self) -> str:
        return "\n".join(p.format(self.where) for p in self.problems)


class SpecWarning(UserWarning):
    """A spec that builds and trains, but likely not as its author meant (a learning-rate warm-up longer than the run).

    A plugin warns from its ``build`` with ``warnings.warn(SpecWarning("..."))``; the
    compiler says where, as for an error: ``file:line: components.flow: type 'flow' ... message``.
    ``compose-gen`` prints each as ``warning: ...``, and ``validate --strict`` fails on them.
    ``path`` is the spec path once located (None in a plugin's own warning).
    """

    def __init__(self, message: str, path: tuple[PathPart, ...] | None = None) -> None:
        super().__init__(message)
        self.path = path
