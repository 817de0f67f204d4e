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

from typing import Literal

import torch
from torch import Tensor, nn
from torch.distributions import constraints

from compose_gen.core.contracts import ContractError, describe_value

__all__ = ["Bijector", "Chain", "Direction"]

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
