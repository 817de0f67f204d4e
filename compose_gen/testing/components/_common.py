"""Helpers shared by the checks: failures, comparisons, seeded and guarded calls, tolerances."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from compose_gen.core.contracts import ContractError

#: Tolerances of the comparisons of ``log_prob`` values (float32 by default).
ATOL, RTOL = 1e-4, 1e-4


def _fail(label: str, problem: str) -> ContractError:
    return ContractError(f"{label}: {problem}")


def _shape(shape: Sequence[int]) -> str:
    return str(tuple(shape))


def _finite(label: str, what: str, value: Tensor) -> None:
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise _fail(label, f"{what} has {bad} non-finite values of {value.numel()}; expected finite values")


def _close(label: str, what: str, actual: Tensor, expected: Tensor, atol: float, rtol: float) -> None:
    error = (actual.detach() - expected.detach()).abs()
    if actual.shape != expected.shape or not bool((error <= atol + rtol * expected.detach().abs()).all()):
        detail = f"shape {_shape(actual.shape)} vs {_shape(expected.shape)}" if actual.shape != expected.shape else f"max error {error.max().item():.3g}"
        raise _fail(label, f"{what} ({detail}, tolerance atol={atol:g}, rtol={rtol:g})")


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """A forked global random stream seeded with ``seed`` (the caller's stream is left as it was).

    CUDA's generators are forked and seeded only once CUDA is in use: starting it here would break the caller's
    later forks, and seeding it lazily would replace a seed the caller gave it.
    """
    cuda = torch.cuda.is_initialized()
    with torch.random.fork_rng(list(range(torch.cuda.device_count())) if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed_all(seed)
        yield


@contextlib.contextmanager
def _evaluating(module: Any) -> Iterator[None]:
    """``module`` (and everything in it) in eval mode, each submodule's mode restored afterwards."""
    modes = [(m, m.training) for m in module.modules()] if isinstance(module, nn.Module) else []
    for m, _ in modes:
        m.training = False
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _core(label: str, check: Callable[..., Any], *args: Any) -> Any:
    """A :mod:`compose_gen.core.contracts` check, its :class:`ContractError` prefixed with ``label``."""
    try:
        return check(*args)
    except ContractError as error:
        raise _fail(label, str(error)) from None


@contextlib.contextmanager
def _calling(label: str, call: str) -> Iterator[None]:
    """Report an exception raised by the plugin's code as a :class:`ContractError` naming the call (chained to it)."""
    try:
        yield
    except ContractError:
        raise
    except Exception as error:
        raise _fail(label, f"{call} raised {type(error).__name__}: {error}") from error

