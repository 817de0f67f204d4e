"""Checks of samplers."""

from __future__ import annotations

import itertools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compose_gen.core.contracts import ContractError, Sampler, check_conditions, check_samples
from compose_gen.testing.components._common import _calling, _core, _evaluating, _fail, _finite, _seeded, _shape


def _device(module: nn.Module) -> torch.device:
    """Where ``module`` keeps its first parameter or buffer (CPU if it has none)."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _default_context(classes: int, value: str) -> Callable[[Tensor], Tensor]:
    """The labels themselves for ``y``, else their one-hot rows."""
    return (lambda labels: labels) if value == "y" else (lambda labels: F.one_hot(labels, classes).float())


def check_sampler(
    sampler: Sampler,
    n: int = 5,
    context: Callable[[Tensor], Tensor] | None = None,
    *,
    temperature: float = 0.7,
    seed: int = 0,
    label: str | None = None,
) -> Tensor:
    """Check a sampler (see the module docstring); returns its ``n`` draws at ``temperature`` (at 1 for a sampler that
    refuses other temperatures).

    A sampler that samples by class is given ``context(labels)`` for the labels
    ``arange(count) % classes``, as the spec's graph would make it from them; the
    default is the labels themselves when ``conditions.value`` is ``"y"``, else
    their one-hot rows (``one_hot(y, classes)``).
    """
    label = label or type(sampler).__name__
    _core(label, check_conditions, sampler)
    conditions = sampler.conditions
    counts = sorted({1, n} | ({conditions.classes + 1} if conditions is not None else set()))
    if conditions is not None and context is None:
        context = _default_context(conditions.classes, conditions.value)

    def draw(count: int, temp: float, shift: int = 0) -> Tensor:
        with _seeded(seed), torch.no_grad(), _evaluating(sampler), _calling(label, f"sample({count}, temperature={temp})"):
            if conditions is None:
                return sampler.sample(count, temp)
            labels = (torch.arange(count, device=_device(sampler)) + shift) % conditions.classes
            return sampler.sample(count, temp, context(labels))

    refused = temperature != 1 and _refuses(draw, n, temperature)
    shape = None
    for count in counts:
        for temp in (1.0,) if refused else (1.0, temperature):
            drawn = draw(count, temp)
            try:
                check_samples(drawn, count)
            except ContractError as error:
                raise _fail(label, f"{error} (at temperature {temp})") from None
            _finite(label, f"sample({count}, temperature={temp})", drawn)
            if shape is not None and tuple(drawn.shape[1:]) != shape:
                raise _fail(label, f"sample({count}) draws examples of shape {_shape(drawn.shape[1:])}, sample({counts[0]}) of {_shape(shape)}; expected one shape")
            shape = tuple(drawn.shape[1:])
    drawn = draw(n, 1.0 if refused else temperature)
    if not torch.equal(drawn, draw(n, 1.0 if refused else temperature)):
        raise _fail(
            label,
            "draws other samples at each call from the same seed; expected it to draw from torch's global random stream, which "
            "compose_gen seeds so that evaluations and `compose-gen sample` repeat (and without which the kit cannot compare "
            "temperatures and classes), not from a generator of its own",
        )
    if temperature != 1 and not refused and torch.equal(drawn, draw(n, 1.0)):
        raise _fail(
            label,
            f"ignores its temperature: the same draws (same seed) at {temperature} as at 1; expected the temperature to scale "
            "its noise, or, for a sampler that has none, a ValueError for any temperature but 1 (compose-gen sample --temperature passes it)",
        )
    if conditions is not None and conditions.classes > 1 and torch.equal(draw(n, temperature if not refused else 1.0, shift=1), drawn):
        raise _fail(label, "ignores its context: the same draws (same seed) for other class labels; expected samples of the labels' classes")
    return drawn


def _refuses(draw: Callable[[int, float], Tensor], n: int, temperature: float) -> bool:
    """Whether the sampler refuses ``temperature`` with a ValueError: one that has none (a uniform prior over codes)
    says so rather than drawing alike at every temperature."""
    try:
        draw(n, temperature)
    except ContractError as error:
        return isinstance(error.__cause__, ValueError)
    return False

