"""Code that ``torch.compile`` should leave out of its graphs."""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

__all__ = ["eager_under_compile"]

F = TypeVar("F", bound=Callable)


def eager_under_compile(fn: F) -> F:
    """``fn`` run eagerly under ``torch.compile``, one graph break, as with ``torch.compiler.disable``.

    For a Python loop of many passes, which the compiler would unroll: an IAF's
    density takes ``D`` MADE passes, and ``iaf_digits``' 128 took 87 s to compile on CPU.
    Outside compiling, ``fn`` is called as it is; the ``torch.compiler.disable``
    wrapper is made only where a compiler traces the call: importing
    ``torch._dynamo`` takes seconds, and most commands never compile.

        >>> @eager_under_compile
        ... def passes(x):
        ...     for _ in range(64):
        ...         x = x.tanh()
        ...     return x
        >>> passes(torch.zeros(2)).tolist()
        [0.0, 0.0]
    """
    @functools.wraps(fn)
    def call(*args, **kwargs):
        if not torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        return torch.compiler.disable(fn)(*args, **kwargs)

    return call  # type: ignore[return-value]
