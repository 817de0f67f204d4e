"""The graph's one-call expressions, parsed without ``eval``.

A graph value is defined by exactly one call::

    fake: generator(z)          # call a component
    z: noise.sample(x)          # a method a component lists in ``graph_methods``
    zq: qz.rsample()            # a method of a distribution value
    joint: cat(x, z)            # a builtin

Arguments are value names, batch fields or numbers.  Nothing else parses, so a
spec can never reach arbitrary Python.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["Call", "parse_call"]

_CALL = re.compile(r"^\s*([A-Za-z_]\w*)(?:\.([A-Za-z_]\w*))?\s*\((.*)\)\s*$")
_NAME = re.compile(r"^[A-Za-z_]\w*$")
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

Arg = str | int | float


@dataclass(frozen=True)
class Call:
    target: str
    method: str | None
    args: tuple[Arg, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The names this call reads: its target and its name arguments."""
        return (self.target, *(a for a in self.args if isinstance(a, str)))

    def __str__(self) -> str:
        callee = f"{self.target}.{self.method}" if self.method else self.target
        return f"{callee}({', '.join(map(str, self.args))})"


def parse_call(text: str) -> Call:
    """Parse ``name(args)`` or ``name.method(args)``; raise ``ValueError`` otherwise."""
    match = _CALL.match(text)
    if match is None:
        raise ValueError(f"expected `component(args)` or `name.method(args)`, got {text!r}")
    target, method, inner = match.groups()
    args: list[Arg] = []
    for raw in (part.strip() for part in inner.split(",")) if inner.strip() else ():
        if _NAME.match(raw):
            args.append(raw)
        elif _NUMBER.match(raw):
            number = float(raw) if any(c in raw for c in ".eE") else int(raw)
            if not math.isfinite(number) or (isinstance(number, int) and abs(number) > 2**63 - 1):  # float64's range; int64's
                raise ValueError(f"number {raw} in {text!r} is beyond the range of torch's numbers")
            args.append(number)
        else:
            raise ValueError(f"argument {raw!r} in {text!r} is neither a name nor a number")
    return Call(target, method, tuple(args))
