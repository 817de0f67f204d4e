r"""Masked autoregressive bijectors: MADE, MAF and IAF.

MADE (Germain et al. 2015, arXiv:1502.03509) is a feed-forward network whose
weight masks make output :math:`d` depend only on the inputs before :math:`d` in an
ordering, so one pass gives the parameters :math:`\theta_d(z_{<d})` of every
dimension.  A masked autoregressive bijector applies an elementwise invertible
transform with those parameters,

.. math:: y_d = \tau(z_d;\ \theta_d(z_{<d})),

whose Jacobian is triangular, so :math:`\log|\det J| = \sum_d \log|\tau'(z_d)|`.
Mapping ``z -> y`` takes one MADE pass; undoing it takes ``D`` sequential passes
(pass ``k`` fixes the ``k``-th dimension in the ordering).  Which direction gets
the single pass is the only difference between

* **MAF** (Papamakarios et al. 2017, arXiv:1705.07057): fast ``forward`` (density,
  data -> noise), sampling by ``D`` passes;
* **IAF** (Kingma et al. 2016, arXiv:1606.04934): fast ``inverse`` (sampling,
  noise -> data), density of arbitrary data by ``D`` passes.

Both use the affine transform :math:`\tau(z) = z\,e^{s} + t` with a soft-clamped
log-scale :math:`s = \tilde s / (1 + |\tilde s| / b)` (``scale_bound`` :math:`b`; a
scaled softsign, the identity near 0 and three times cheaper on CPU than
:math:`b\tanh(\tilde s/b)`), which keeps every scale in :math:`(e^{-b}, e^{b})` for
any network output.  This is MAF's
:math:`u = (x-\mu)e^{-\alpha}` with :math:`e^{s} = e^{-\alpha}`, :math:`t = -\mu e^{-\alpha}`.
Conditional variants feed a context vector to every MADE hidden unit (context
inputs are never masked).  :mod:`.spline` reuses this machinery with a spline
transform.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, PositiveInt
from torch import Tensor, nn

from compose_gen import Bijector, ComponentType, Params, Seed, eager_under_compile, hookimpl
from compose_gen_plugins.flows import EventShape
from compose_gen_plugins.networks import Activation, activation_after_linear, broadcast_context

__all__ = [
    "MADE",
    "AffineTransform",
    "AutoregressiveParams",
    "ElementwiseTransform",
    "MaskedAutoregressive",
    "MaskedLinear",
]

Order = Literal["natural", "random"]


class MaskedLinear(nn.Linear):
    """``y = (W ⊙ M) x + b`` with a fixed binary mask ``M`` of shape ``(out, in)``."""

    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float())

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    r"""Masked autoencoder for distribution estimation (Germain et al. 2015, arXiv:1502.03509).

    Inputs get degrees :math:`m(d) \in \{1..D\}` (the ordering: natural, or a seeded
    random permutation), context inputs degree 0, hidden units degrees cycling
    through :math:`\{1..D-1\}`, or :math:`\{0..D-1\}` with a context.  A hidden connection exists iff
    :math:`m_{\text{out}} \ge m_{\text{in}}`, an output connection iff
    :math:`m_{\text{out}} > m_{\text{in}}`, so output :math:`d` depends only on
    :math:`x_{<d}` in the ordering (and on the whole context).  ``forward`` returns
    ``params_per_feature`` outputs per input: shape ``[..., params_per_feature, D]``;
    the output layer starts at zero.
    """

    def __init__(
        self,
        features: int,
        hidden: list[int] | tuple[int, ...],
        params_per_feature: int,
        context_features: int = 0,
        order: Order = "natural",
        seed: int = 0,
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        self.features, self.params_per_feature, self.context_features = features, params_per_feature, context_features
        ordering = torch.arange(1, features + 1)
        if order == "random":
            ordering = ordering[torch.randperm(features, generator=torch.Generator().manual_seed(seed))]
        self.register_buffer("ordering", ordering)
        degrees = torch.cat([ordering, torch.zeros(context_features, dtype=torch.long)])
        layers: list[nn.Module] = []
        for width in hidden:
            hidden_degrees = self._hidden_degrees(width)
            layers += [MaskedLinear(hidden_degrees[:, None] >= degrees[None, :]), activation_after_linear(activation)]
            degrees = hidden_degrees
        output = MaskedLinear(ordering.repeat(params_per_feature)[:, None] > degrees[None, :])
        nn.init.zeros_(output.weight)  # zero parameters: every transform here starts as the identity
        nn.init.zeros_(output.bias)
        self.net = nn.Sequential(*layers, output)

    def _hidden_degrees(self, width: int) -> Tensor:
        # Degree-0 units read only the context, so the first dimension in the ordering can depend on it too;
        # cycling through every degree keeps every connection the ordering allows (given width >= D).
        lowest = 0 if self.context_features or self.features == 1 else 1
        return torch.arange(width) % (self.features - lowest) + lowest

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        inputs = x if context is None else torch.cat([x, context], dim=-1)
        out = self.net(inputs.reshape(-1, inputs.shape[-1]))  # a matrix: in-place activations must not hit views
        return out.reshape(*x.shape[:-1], self.params_per_feature, self.features)


class ElementwiseTransform(Protocol):
    """An invertible scalar map ``τ(z; θ)`` applied to every feature with its own parameters.

    ``params`` has shape ``[..., params_per_feature, D]``; both directions return
    the transformed values and the elementwise ``log|dτ/dz|`` (or its inverse's).
    """

    params_per_feature: int

    def __call__(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor]: ...

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]: ...


class AffineTransform:
    r""":math:`\tau(z) = z\,e^{s} + t` with :math:`s = \tilde s / (1 + |\tilde s|/b)`; :math:`\log|\tau'| = s`."""

    params_per_feature = 2

    def __init__(self, scale_bound: float) -> None:
        self.scale_bound = scale_bound

    def _log_scale_shift(self, params: Tensor) -> tuple[Tensor, Tensor]:
        raw, shift = params.unbind(-2)
        return raw / (1 + raw.abs() / self.scale_bound), shift

    def __call__(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._log_scale_shift(params)
        return z * log_scale.exp() + shift, log_scale

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._log_scale_shift(params)
        return (y - shift) * (-log_scale).exp(), -log_scale


class MaskedAutoregressive(Bijector):
    """A MADE-parameterised elementwise transform; one direction takes one pass, the other ``D``.

    ``fast="forward"`` (MAF) maps ``x -> y`` in one pass with ``θ`` computed from
    ``x``; ``fast="inverse"`` (IAF) maps ``y -> x`` in one pass with ``θ`` computed
    from ``y``.  The event (any shape) is flattened in row-major order.  Under
    ``torch.compile`` the ``D``-pass direction runs eagerly, its one graph break.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        transform: ElementwiseTransform,
        made: MADE,
        fast: Literal["forward", "inverse"],
    ) -> None:
        super().__init__(shape)
        if made.features != math.prod(shape) or made.params_per_feature != transform.params_per_feature:
            raise ValueError(
                f"MADE with {made.features} features x {made.params_per_feature} parameters does not fit "
                f"event shape {tuple(shape)} x {transform.params_per_feature} parameters"
            )
        self.transform, self.made, self.fast = transform, made, fast
        self.context_shape = torch.Size([made.context_features]) if made.context_features else None

    def _flat(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor | None]:
        batch = self.batch_shape(x)
        context = broadcast_context(context, batch, self.made.context_features, type(self).__name__)
        return x.reshape(*batch, self.made.features), context

    def _one_pass(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        flat, context = self._flat(z, context)
        y, log_derivative = self.transform(flat, self.made(flat, context))
        return y.reshape(z.shape), log_derivative.sum(-1)

    @eager_under_compile
    def _sequential(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        flat, context = self._flat(y, context)
        z = torch.zeros_like(flat)
        for _ in range(self.made.features):  # after pass k the first k dimensions in the ordering are exact
            z, log_derivative = self.transform.inverse(flat, self.made(z, context))
        return z.reshape(y.shape), log_derivative.sum(-1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._one_pass(x, context) if self.fast == "forward" else self._sequential(x, context)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._sequential(y, context) if self.fast == "forward" else self._one_pass(y, context)


class MADEParams(Params):
    """Shared parameters of the MADE-based bijectors."""

    shape: EventShape = Field(..., description="event shape of x, flattened row-major into the D MADE inputs")
    hidden: list[PositiveInt] = Field(
        default_factory=lambda: [64, 64], description="MADE hidden widths; widths >= D keep every allowed connection"
    )
    context_features: int = Field(0, ge=0, description="size of the context vector; 0: unconditional")
    order: Order = Field("natural", description="input ordering: natural, or a random permutation drawn from seed")
    seed: Seed = Field(0, description="seed of the random input ordering (order: random)")
    activation: Activation = Field("relu", description="activation of the MADE hidden layers")


class AutoregressiveParams(MADEParams):
    """An affine autoregressive bijector (MAF or IAF)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"shape": [4], "hidden": [16]},
                {"shape": [5], "hidden": [12, 12], "order": "random", "seed": 3, "context_features": 2},
                {"shape": [1, 2, 2], "hidden": [8], "scale_bound": 2.0},
                {"shape": [1], "hidden": [4], "context_features": 3},
            ]
        }
    )
    scale_bound: float = Field(3.0, gt=0, description="log-scales are soft-clamped to [-bound, bound]")


def made_for(params: MADEParams, params_per_feature: int) -> MADE:
    """The MADE that ``params`` describe, with ``params_per_feature`` outputs per feature."""
    return MADE(
        math.prod(params.shape),
        params.hidden,
        params_per_feature,
        params.context_features,
        params.order,
        params.seed,
        params.activation,
    )


def _affine_autoregressive(params: AutoregressiveParams, fast: Literal["forward", "inverse"]) -> MaskedAutoregressive:
    transform = AffineTransform(params.scale_bound)
    return MaskedAutoregressive(tuple(params.shape), transform, made_for(params, transform.params_per_feature), fast)


def build_maf(params: AutoregressiveParams, ctx: object) -> MaskedAutoregressive:
    """MAF layer u = x·exp(s(x_<d)) + t(x_<d): fast density, D-pass sampling (Papamakarios et al. 2017)."""
    return _affine_autoregressive(params, "forward")


def build_iaf(params: AutoregressiveParams, ctx: object) -> MaskedAutoregressive:
    """IAF layer x = u·exp(s(u_<d)) + t(u_<d): fast sampling, D-pass density (Kingma et al. 2016)."""
    return _affine_autoregressive(params, "inverse")


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("maf", "bijector", AutoregressiveParams, build_maf),
        ComponentType("iaf", "bijector", AutoregressiveParams, build_iaf),
    ]
