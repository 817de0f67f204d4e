"""The bijector contract: an invertible map that reports its log-determinant.

A bijector ``f`` maps ``x`` to ``y = f(x)``.  Both directions return the
log-absolute-determinant of *their own* Jacobian, summed over event dimensions::

    y, ladj = bij(x)            # ladj = log |det ∂f(x)/∂x|,        shape = batch shape
    x, ladj = bij.inverse(y)    # ladj = log |det ∂f⁻¹(y)/∂y| = -ladj above

Batch dimensions lead and event dimensions trail; every bijector broadcasts over
any number of extra leading dimensions.  A normalizing flow maps data to noise
with ``forward`` (the *density* direction) and noise to data with ``inverse``
(the *sampling* direction); ``fast`` says which of the two is cheap (MAF is fast
forward, IAF fast inverse): ``compose-gen plugins`` shows it, so a flow is chosen
for its use, and the conformance checks take a Jacobian where it costs one pass.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn
from torch.autograd.functional import jacobian
from torch.distributions import constraints

from compose_gen.core.contracts import ContractError, describe_value

__all__ = ["Bijector", "Chain", "Direction", "check_constructed", "check_invertible"]

#: Largest event size whose Jacobian :func:`check_invertible` takes (a D × D matrix, batched by vmap where it can be).
JACOBIAN_MAX_EVENT = 64
#: :func:`check_invertible`'s tolerance on ``|ladj - log|det J||``, times ``1 + |log|det J||``: float64 slogdet of a
#: closed-form Jacobian agrees to ~1e-15 on the shipped specs, so this allows ill-conditioning, not a wrong formula.
LADJ_TOLERANCE = 1e-4

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
        batch shape; both keep ``value``'s dtype and device.  The compiler's dry run
        checks every bijector of a spec this way.
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
        for name, tensor in zip(("an output", "ladj"), result, strict=True):
            if (tensor.dtype, tensor.device) != (value.dtype, value.device):
                raise ContractError(
                    f"{direction} returned {name} of {tensor.dtype} on {tensor.device} for an input of {value.dtype} on "
                    f"{value.device}; keep the input's dtype and device"
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
        self.surjective = any(b.surjective for b in bijectors)  # a link that projects makes the whole a projection

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


def check_constructed(bijector: Bijector) -> None:
    """Raise :class:`ContractError` unless ``bijector`` was made through ``Bijector.__init__`` (so it has an
    ``event_shape``) and declares ``fast`` as one of ``"forward"``, ``"inverse"`` or ``"both"``."""
    if not isinstance(getattr(bijector, "event_shape", None), tuple):
        raise ContractError("has no event_shape: its __init__ must call super().__init__(shape), Bijector's own, which sets it")
    if bijector.fast not in get_args(Direction):
        raise ContractError(f"declares fast = {bijector.fast!r}; the fast direction is one of {', '.join(map(repr, get_args(Direction)))}")
    problem = context_shape_problem(getattr(bijector, "context_shape", None))
    if problem:
        raise ContractError(problem)


def context_shape_problem(shape: Any) -> str | None:
    """What is wrong with a declared ``context_shape`` (``None``: no context, or a tuple of positive sizes), or None."""
    if shape is None or (isinstance(shape, (tuple, list)) and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)):
        return None
    return f"declares context_shape = {shape!r}; the context's event shape is a tuple of positive sizes, such as (2,)"


def check_invertible(
    bijector: Bijector,
    value: Tensor,
    context: Tensor | None = None,
    direction: Literal["forward", "inverse"] = "forward",
    noise: float = 0.1,
    tolerance: float = 1e-2,
    ladj_tolerance: float = LADJ_TOLERANCE,
) -> None:
    r"""Raise :class:`ContractError` unless ``bijector`` inverts itself and reports its log-determinant at ``value``.

    ``value`` is an input of ``direction`` (``x`` forward, ``y`` inverse).  On a float64 copy
    in training mode and one in eval mode (only the latter, the exact mode, for a
    ``stochastic_ladj``), each parameter perturbed by Gaussian noise of σ =
    ``noise`` × its root mean square (0.1 × ``noise`` for an all-zero one, so that a
    zero-initialised layer is not the identity), at the first 8 examples: the other
    direction undoes ``direction``, its ladj is minus the first one's, and, for events of
    at most :data:`JACOBIAN_MAX_EVENT` values, the ladj of the fast direction is
    :math:`\log|\det J|` of its autograd Jacobian at the first example.  The round trip and the two
    ladj's opposition are allowed ``tolerance · (1 + |expected|)``, loose enough for an inverse found by
    iteration (they catch gross errors only: a ladj off by the same amount both ways passes them); the
    Jacobian's ``ladj_tolerance · (1 + |log|det J||)``, in float64 (0.007 nats at a ladj of 70 with the
    default 1e-4), so that a log-determinant formula off by a fraction of a nat is refused.  A layer that
    draws noise (dequantization) is not checked.
    The compiler's dry run checks every bijector of a spec this way;
    :mod:`compose_gen.testing.bijectors` checks a type far more thoroughly.
    """
    if bijector.draws_noise:
        return
    event = bijector.event_shape if direction == "forward" else bijector.out_event_shape
    rows = value.detach().reshape(-1, *event)[:8].double()
    if context is not None:
        context_event = context.shape[context.dim() - len(getattr(bijector, "context_shape", None) or context.shape[-1:]) :]
        if context.shape[: context.dim() - len(context_event)] != value.shape[: value.dim() - len(event)]:
            return  # a context broadcast to the input (k draws per example): its rows do not pair with the input's
        context = context.detach().reshape(-1, *context_event)[:8].double()
    for training in (False,) if bijector.stochastic_ladj else (True, False):  # a stochastic ladj is exact in eval mode only
        _check_copy(_perturbed(bijector, noise, training), direction, rows, context, noise, tolerance, ladj_tolerance)


def _check_copy(
    twin: Bijector,
    direction: Literal["forward", "inverse"],
    rows: Tensor,
    context: Tensor | None,
    noise: float,
    tolerance: float,
    ladj_tolerance: float,
) -> None:
    """:func:`check_invertible`'s checks of a perturbed float64 copy, in the mode it is in."""
    other: Literal["forward", "inverse"] = "inverse" if direction == "forward" else "forward"
    with torch.no_grad():
        out, ladj = _pair(twin, direction, rows, context)
        if not (bool(out.isfinite().all()) and bool(ladj.isfinite().all())):
            return  # NaN or inf of finite inputs: the dry run names the component that makes them
        back, ladj_back = _pair(twin, other, out, context)
    names = ("x", "y") if direction == "forward" else ("y", "x")
    mode = "training" if twin.training else "eval"
    _close(f"{other}({direction}({names[0]})) == {names[0]}", back, rows, tolerance, noise, mode)
    _close(f"the {other} ladj == minus the {direction} ladj at {names[1]} = {direction}({names[0]})", ladj_back, -ladj, tolerance, noise, mode)
    if rows[0].numel() > JACOBIAN_MAX_EVENT:
        return
    fast = direction if twin.fast in ("both", direction) else other  # a slow direction's Jacobian takes D passes each
    point, fast_ladj = (rows, ladj) if fast == direction else (out, ladj_back)
    shape = point.shape[1:]
    one_context = None if context is None else context[:1]

    def fast_map(v: Tensor) -> Tensor:
        return getattr(twin, fast)(v.reshape(1, *shape), one_context)[0].flatten()

    with torch.enable_grad():
        try:  # backward passes batched by vmap
            jac = jacobian(fast_map, point[:1].flatten(1), vectorize=True)
        except RuntimeError:  # an operation vmap cannot batch: one backward pass per output
            jac = jacobian(fast_map, point[:1].flatten(1))
    log_det = torch.linalg.slogdet(jac.reshape(shape.numel(), shape.numel())).logabsdet
    _close(f"{fast} ladj == log|det J| of the autograd Jacobian", fast_ladj[:1], log_det.reshape(1), ladj_tolerance, noise, mode)


def _perturbed(bijector: Bijector, noise: float, training: bool) -> Bijector:
    """A float64 copy in training mode or not, whose parameters are moved by noise relative to their size (seeded: the
    same each time).

    The copy runs the methods the original does, the ones its instances chose for themselves included (the dry run's
    checks, set on the original's instances, check the original alone).
    """
    twin = copy.deepcopy(bijector).double().train(training)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in twin.parameters():
            size = float(parameter.square().mean().sqrt()) if parameter.numel() else 0.0
            draw = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype).to(parameter.device)
            parameter.add_(noise * (size or 0.1) * draw)
    return twin


def _pair(bijector: Bijector, direction: Literal["forward", "inverse"], value: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
    """``direction`` of ``bijector``, checked to be ``(y, ladj)``."""
    result = getattr(bijector, direction)(value, context)
    bijector.check_output(direction, value, result)
    return result


def _close(prop: str, actual: Tensor, expected: Tensor, tolerance: float, noise: float, mode: str) -> None:
    error = (actual - expected).abs()
    bad = ~(error <= tolerance * (1 + expected.abs()))  # NaN is no agreement
    if bool(bad.any()):
        where = int(bad.flatten().nonzero()[0])
        raise ContractError(
            f"{prop} fails: {float(actual.flatten()[where]):.6g} where {float(expected.flatten()[where]):.6g} is expected "
            f"(in {mode} mode, its parameters perturbed by {noise:.0%} noise, on the dry run's inputs in float64); "
            "check the type with compose_gen.testing.bijectors.check_type"
        )
