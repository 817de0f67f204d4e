"""The bijector contract: an invertible map that reports its log-determinant.

A bijector ``f`` maps ``x`` to ``y = f(x)``.  Both directions return the
log-absolute-determinant of *their own* Jacobian, summed over event dimensions::

    y, ladj = bij(x)            # ladj = log |det ∂f(x)/∂x|,        shape = batch shape
    x, ladj = bij.inverse(y)    # ladj = log |det ∂f⁻¹(y)/∂y| = -ladj above

Batch dimensions lead and event dimensions trail; every bijector broadcasts over
any number of extra leading dimensions.  A normalizing flow maps data to noise
with ``forward`` (the *density* direction) and noise to data with ``inverse``
(the *sampling* direction); ``fast`` says which of the two is cheap (MAF is fast
forward, IAF fast inverse), so the compiler can warn about slow uses.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import Tensor, nn
from torch.autograd.functional import jacobian
from torch.distributions import constraints

from compose_gen.core.contracts import ContractError, describe_value

__all__ = ["Bijector", "Chain", "Direction", "check_invertible"]

#: Largest event size whose Jacobian :func:`check_invertible` takes (one backward pass per element).
JACOBIAN_MAX_EVENT = 64

Direction = Literal["forward", "inverse", "both"]


class Bijector(nn.Module):
    """Base class of every invertible transformation.

    Subclasses set ``event_shape`` (the trailing shape of ``x`` they act on),
    optionally ``out_event_shape`` when ``y`` has another shape (squeeze),
    ``domain``/``codomain`` (torch ``constraints``) and ``fast``, and implement
    :meth:`forward` and :meth:`inverse`.  ``context`` is an optional conditioning
    tensor with the same batch shape as the input.
    """

    domain: constraints.Constraint = constraints.real
    codomain: constraints.Constraint = constraints.real
    fast: Direction = "both"
    #: True when ``ladj`` is a stochastic (unbiased) estimate in training mode.
    stochastic_ladj: bool = False
    #: True for a stochastic surjection such as dequantization (Nielsen et al. 2020):
    #: ``inverse`` projects onto a discrete domain and ``forward`` adds noise, so only
    #: ``inverse(forward(x)) == x`` holds, for ``x`` in the image of ``inverse``.
    surjective: bool = False

    def __init__(self, event_shape: tuple[int, ...] | torch.Size) -> None:
        super().__init__()
        self.event_shape = torch.Size(event_shape)

    @property
    def out_event_shape(self) -> torch.Size:
        return self.event_shape

    @property
    def draws_noise(self) -> bool:
        """Whether ``forward`` draws noise: this bijector, or one inside it, is a stochastic surjection (dequantization)."""
        return any(getattr(module, "surjective", False) for module in self.modules())

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def batch_shape(self, x: Tensor) -> torch.Size:
        """Leading shape of ``x`` once the event dimensions are removed."""
        return x.shape[: x.dim() - len(self.event_shape)]

    def check_output(self, direction: Literal["forward", "inverse"], value: Tensor, result: object) -> None:
        """Raise :class:`ContractError` unless ``result`` (what ``direction`` returned for ``value``) is ``(y, ladj)``.

        The output must have ``value``'s batch shape followed by the other side's event
        shape (``out_event_shape`` forward, ``event_shape`` inverse), and ``ladj`` the
        batch shape.  The compiler's dry run checks every bijector of a spec this way.
        """
        if not (isinstance(result, (tuple, list)) and len(result) == 2 and all(isinstance(r, Tensor) for r in result)):
            raise ContractError(f"{direction} returned {describe_value(result)}, not a pair of tensors (y, ladj)")
        event, other = (self.event_shape, self.out_event_shape) if direction == "forward" else (self.out_event_shape, self.event_shape)
        batch = value.shape[: value.dim() - len(event)]
        if result[0].shape != (*batch, *other):
            raise ContractError(
                f"{direction} returned an output of shape {tuple(result[0].shape)} for an input of shape {tuple(value.shape)}; "
                f"expected the batch shape {tuple(batch)} followed by the event shape {tuple(other)}"
            )
        if result[1].shape != batch:
            raise ContractError(
                f"{direction} returned ladj of shape {tuple(result[1].shape)} for an input of shape {tuple(value.shape)}; "
                f"ladj is summed over the event dimensions {tuple(event)}, so its shape is the batch shape {tuple(batch)}"
            )

    def extra_repr(self) -> str:
        return f"event_shape={tuple(self.event_shape)}, fast={self.fast}"


class Chain(Bijector):
    """Composition ``f = f_n ∘ … ∘ f_1``; log-determinants add up.

    ``forward`` applies ``f_1`` first; ``inverse`` undoes them in reverse order.
    ``context`` reaches every link.
    """

    def __init__(self, bijectors: list[Bijector] | tuple[Bijector, ...]) -> None:
        if not bijectors:
            raise ValueError("a Chain needs at least one bijector")
        super().__init__(bijectors[0].event_shape)
        self.bijectors = nn.ModuleList(bijectors)
        self._out_event_shape = bijectors[-1].out_event_shape
        self.domain = bijectors[0].domain
        self.codomain = bijectors[-1].codomain
        speeds = {b.fast for b in bijectors} - {"both"}
        self.fast = speeds.pop() if len(speeds) == 1 else ("both" if not speeds else "forward")
        self.stochastic_ladj = any(b.stochastic_ladj for b in bijectors)

    @property
    def out_event_shape(self) -> torch.Size:
        return self._out_event_shape

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(self.batch_shape(x))
        for bijector in self.bijectors:
            x, ladj = bijector(x, context)
            total = total + ladj
        return x, total

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = y.new_zeros(y.shape[: y.dim() - len(self.out_event_shape)])
        for bijector in reversed(self.bijectors):
            y, ladj = bijector.inverse(y, context)
            total = total + ladj
        return y, total


def check_invertible(bijector: Bijector, x: Tensor, context: Tensor | None = None, noise: float = 0.1, tolerance: float = 1e-4) -> None:
    r"""Raise :class:`ContractError` unless ``bijector`` inverts itself and reports its log-determinant on ``x``.

    On a float64 copy in eval mode (the exact mode) whose parameters are perturbed by
    Gaussian noise of σ = ``noise`` (so that a zero-initialised layer is not the identity;
    any real parameters give a valid bijector, as the conformance kit assumes), at the
    first 8 examples of ``x``: ``inverse(forward(x)) = x``, the inverse's ladj is minus
    the forward's, and, for events of at most :data:`JACOBIAN_MAX_EVENT` values, the
    forward ladj of the first example is :math:`\log|\det \partial y/\partial x|` of
    the autograd Jacobian.  Errors are allowed ``tolerance · (1 + |expected|)``.  A layer
    that draws noise (dequantization) is not checked.  The compiler's dry run checks every
    bijector of a spec this way; :mod:`compose_gen.testing.bijectors` checks a type fully.
    """
    if bijector.draws_noise:
        return
    event = bijector.event_shape
    rows = x.detach().reshape(-1, *event)[:8].double()
    if context is not None:
        context_event = context.shape[context.dim() - len(getattr(bijector, "context_shape", None) or context.shape[-1:]) :]
        if context.shape[: context.dim() - len(context_event)] != x.shape[: x.dim() - len(event)]:
            return  # a context broadcast to the input (k draws per example): its rows do not pair with the input's
        context = context.detach().reshape(-1, *context_event)[:8].double()
    twin = copy.deepcopy(bijector).double().eval()
    generator = torch.Generator(device=rows.device).manual_seed(0)
    with torch.no_grad():
        for parameter in twin.parameters():
            parameter.add_(noise * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype, device=parameter.device))
        y, ladj = _pair(twin, "forward", rows, context)
        back, ladj_back = _pair(twin, "inverse", y, context)
    _close("inverse(forward(x)) == x", back, rows, tolerance)
    _close("the inverse's ladj == minus the forward's at y = forward(x)", ladj_back, -ladj, tolerance)
    if event.numel() > JACOBIAN_MAX_EVENT:
        return
    first = rows[:1].flatten(1)
    one_context = None if context is None else context[:1]
    with torch.enable_grad():
        jac = jacobian(lambda v: type(twin).forward(twin, v.reshape(1, *event), one_context)[0].flatten(), first)
    log_det = torch.linalg.slogdet(jac.reshape(event.numel(), event.numel())).logabsdet
    _close("forward ladj == log|det ∂y/∂x| of the autograd Jacobian", ladj[:1], log_det.reshape(1), tolerance)


def _pair(bijector: Bijector, direction: Literal["forward", "inverse"], value: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
    """``direction`` of ``bijector`` (its class's method, not a checking one set on the instance), checked to be ``(y, ladj)``."""
    result = getattr(type(bijector), direction)(bijector, value, context)
    bijector.check_output(direction, value, result)
    return result


def _close(prop: str, actual: Tensor, expected: Tensor, tolerance: float) -> None:
    error = (actual - expected).abs()
    bad = error > tolerance * (1 + expected.abs())
    if bool(bad.any()):
        where = int(bad.flatten().nonzero()[0])
        raise ContractError(
            f"{prop} fails: {float(actual.flatten()[where]):.6g} where {float(expected.flatten()[where]):.6g} is expected "
            f"(its parameters perturbed by noise σ = 0.1, on the dry run's inputs in float64); "
            "check the type with compose_gen.testing.bijectors.check_type"
        )
