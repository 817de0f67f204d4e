r"""Coupling layers: NICE's additive and RealNVP's affine coupling, with masks and conditioners.

A binary mask :math:`m` splits :math:`x` into a conditioning part :math:`x_A = m \odot x`
and a transformed part; a conditioner network reads :math:`x_A` (and the context,
concatenated to its input) and parametrises an elementwise map of the rest, so the
Jacobian is triangular.  Masks (``flip`` swaps the two parts):

* ``half``: the first half of the flattened event conditions;
* ``alternating``: even positions of the flattened event condition;
* ``checkerboard``: pixels with even :math:`h + w` condition (images);
* ``channel``: the first half of the channels condition (images).

Conditioners are an MLP from the conditioning features to the transformed
features' parameters (``mlp``) or, for images, a convnet over the masked image
(``conv``: 3x3, then 1x1, then 3x3 convolutions, as in Glow); their last layer
starts at zero so every coupling starts as the identity.  :class:`MaskedCoupling`
holds what the additive, affine and spline couplings share: the mask, the
conditioner and the split of x into the part that passes and the part mapped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator
from torch import Tensor, nn

from compose_gen import Bijector, ComponentType, Params, hookimpl
from compose_gen_plugins.flows import EventShape
from compose_gen_plugins.networks import broadcast_context
from compose_gen_plugins.networks import activation_after_linear

__all__ = [
    "AdditiveCoupling",
    "AffineCoupling",
    "ConvConditioner",
    "MLPConditioner",
    "MaskedCoupling",
    "coupling_args",
    "coupling_mask",
    "make_conditioner",
]

MaskKind = Literal["half", "alternating", "checkerboard", "channel"]


def coupling_mask(shape: tuple[int, ...], kind: MaskKind, flip: bool = False) -> Tensor:
    """The binary mask (1 = conditioning) of a coupling layer, of event shape ``shape``.

    Refuses a mask that leaves either part empty (one feature, a 1x1 checkerboard):
    with nothing to condition on or nothing to transform there is no coupling.
    """
    if kind in ("checkerboard", "channel") and len(shape) != 3:
        raise ValueError(f"mask {kind!r} needs an image shape [C, H, W], got {list(shape)}")
    index = torch.arange(math.prod(shape)).reshape(shape)
    if kind == "half":
        mask = index < math.prod(shape) // 2
    elif kind == "alternating":
        mask = index % 2 == 0
    elif kind == "checkerboard":
        h, w = torch.arange(shape[1]), torch.arange(shape[2])
        mask = ((h[:, None] + w) % 2 == 0).expand(shape)
    else:
        mask = (torch.arange(shape[0]) < shape[0] // 2)[:, None, None].expand(shape)
    mask = mask != flip
    if mask.all() or not mask.any():
        empty = "nothing to transform" if mask.all() else "nothing to condition on"
        problem = f"mask {kind!r}{' (flipped)' if flip else ''} on shape {list(shape)} leaves {empty}"
        if math.prod(shape) < 2:
            raise ValueError(f"a coupling needs at least 2 features: {problem}; on one feature use an elementwise bijector (affine)")
        raise ValueError(f"a coupling needs features on both sides of its mask: {problem}")
    return mask.to(torch.get_default_dtype())


def _zero_last(layers: list[nn.Module]) -> nn.Sequential:
    nn.init.zeros_(layers[-1].weight)
    nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


def _positions(mask: Tensor, conditioning: bool) -> Tensor:
    """Flattened indices of the conditioning (mask 1) or transformed (mask 0) positions."""
    flat = mask.flatten() > 0
    return (flat if conditioning else ~flat).nonzero().squeeze(1)


class MLPConditioner(nn.Module):
    """``(x, context) ↦`` parameters ``(*batch, outputs, n)`` of the ``n`` transformed features.

    An MLP reads only the conditioning features of the flattened event (and the
    context) and writes only the transformed features' parameters, so neither
    end of it is spent on positions the mask discards.
    """

    def __init__(
        self, shape: tuple[int, ...], mask: Tensor, outputs: int, hidden: Sequence[int], context_features: int = 0
    ) -> None:
        super().__init__()
        self.shape, self.outputs = torch.Size(shape), outputs
        self.register_buffer("conditioning", _positions(mask, conditioning=True), persistent=False)
        transformed = math.prod(shape) - len(self.conditioning)
        sizes = [len(self.conditioning) + context_features, *hidden, outputs * transformed]
        layers: list[nn.Module] = []
        for n_in, n_out in pairwise(sizes):
            layers += [nn.Linear(n_in, n_out), activation_after_linear("relu")]
        self.net = _zero_last(layers[:-1])

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        h = x.flatten(x.dim() - len(self.shape))[..., self.conditioning]
        if context is not None:
            h = torch.cat([h, context], -1)
        out = self.net(h.reshape(-1, h.shape[-1]))  # a matrix: the in-place ReLUs must not hit views
        return out.reshape(*h.shape[:-1], self.outputs, -1)


class ConvConditioner(nn.Module):
    """``(x, context) ↦`` parameters ``(*batch, outputs, n)`` of the ``n`` transformed pixels, by a convnet.

    The convnet sees the image with its transformed pixels zeroed (the context
    tiled over pixels as extra channels) and is read at the transformed pixels.
    """

    def __init__(
        self, shape: tuple[int, ...], mask: Tensor, outputs: int, hidden: Sequence[int], context_features: int = 0
    ) -> None:
        super().__init__()
        self.shape, self.outputs = torch.Size(shape), outputs
        self.register_buffer("mask", mask.clone(), persistent=False)
        self.register_buffer("transformed", _positions(mask, conditioning=False), persistent=False)
        channels = [shape[0] + context_features, *hidden, outputs * shape[0]]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(pairwise(channels)):
            kernel = 3 if i in (0, len(channels) - 2) else 1
            layers += [nn.Conv2d(n_in, n_out, kernel, padding=kernel // 2), activation_after_linear("relu")]
        self.net = _zero_last(layers[:-1])

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        batch = x.shape[:-3]
        h = (x * self.mask).reshape(-1, *self.shape)
        if context is not None:
            tiled = context.reshape(len(h), -1, 1, 1)
            h = torch.cat([h, tiled.expand(-1, -1, *self.shape[1:])], 1)
        return self.net(h).reshape(*batch, self.outputs, -1)[..., self.transformed]


def make_conditioner(
    shape: Sequence[int],
    mask: Tensor,
    outputs: int,
    hidden: Sequence[int],
    kind: Literal["mlp", "conv"] | None,
    context_features: int,
) -> nn.Module:
    """The coupling conditioner: a conv net for image shapes [C, H, W] by default, an MLP otherwise."""
    kind = kind or ("conv" if len(shape) == 3 else "mlp")
    if kind == "conv" and len(shape) != 3:
        raise ValueError(f"a conv conditioner needs an image shape [C, H, W], got {list(shape)}")
    network = ConvConditioner if kind == "conv" else MLPConditioner
    return network(tuple(shape), mask, outputs, list(hidden), context_features)


class MaskedCoupling(Bijector):
    """A coupling layer: the conditioning features pass unchanged, the others through an elementwise map.

    Subclasses pass ``outputs`` (parameters per transformed feature) and call
    :meth:`couple` with their elementwise map.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        outputs: int,
        mask: MaskKind = "half",
        flip: bool = False,
        hidden: Sequence[int] = (64, 64),
        conditioner: Literal["mlp", "conv"] | None = None,
        context_features: int = 0,
    ) -> None:
        super().__init__(shape)
        binary = coupling_mask(tuple(shape), mask, flip)
        self.register_buffer("mask", binary)
        self.register_buffer("transformed", _positions(binary, conditioning=False), persistent=False)
        self.conditioner = make_conditioner(shape, binary, outputs, hidden, conditioner, context_features)
        self.context_features = context_features
        self.context_shape = torch.Size([context_features]) if context_features else None

    def couple(
        self, x: Tensor, context: Tensor | None, elementwise: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
    ) -> tuple[Tensor, Tensor]:
        """``elementwise(x_t, params) -> (y_t, ladj)`` applied to the transformed features ``x_t`` of ``x``."""
        batch = self.batch_shape(x)
        context = broadcast_context(context, batch, self.context_features, type(self).__name__)
        flat = x.reshape(*batch, -1)
        y_t, ladj = elementwise(flat[..., self.transformed], self.conditioner(x, context))
        dtype = torch.promote_types(flat.dtype, y_t.dtype)  # autocast can leave the two halves in different precisions
        return flat.to(dtype).index_copy(-1, self.transformed, y_t.to(dtype)).reshape(x.shape), ladj


class AdditiveCoupling(MaskedCoupling):
    r"""NICE additive coupling (Dinh et al. 2015, arXiv:1410.8516).

    :math:`y = x + (1 - m) \odot t(m \odot x)`, volume preserving: :math:`\log|\det J| = 0`.
    """

    def __init__(self, shape: tuple[int, ...], **kwargs: Any) -> None:
        """Arguments as for :class:`MaskedCoupling` (mask, flip, hidden, conditioner, context_features)."""
        super().__init__(shape, 1, **kwargs)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.couple(x, context, lambda x_t, h: (x_t + h[..., 0, :], x.new_zeros(self.batch_shape(x))))

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.couple(y, context, lambda y_t, h: (y_t - h[..., 0, :], y.new_zeros(self.batch_shape(y))))


class AffineCoupling(MaskedCoupling):
    r"""RealNVP affine coupling (Dinh et al. 2017, arXiv:1605.08803); Glow's with ``conv`` (Kingma & Dhariwal 2018).

    :math:`y = x \odot e^{s} + t`, with :math:`(t, s) = (1 - m) \odot \mathrm{NN}(m \odot x)`
    and :math:`\log|\det J| = \sum_i s_i`.  The log-scale is bounded for stability:
    ``tanh``: :math:`s = a \odot \tanh(\tilde s)` with a learned :math:`a` (Dinh et al. 2017);
    ``clamp``: :math:`s = \tfrac{2c}{\pi}\arctan(\tilde s / c)`, a soft clamp to :math:`(-c, c)`
    (Ardizzone et al. 2019, arXiv:1808.04730).
    """

    def __init__(
        self, shape: tuple[int, ...], scale: Literal["tanh", "clamp"] = "clamp", clamp: float = 2.0, **kwargs: Any
    ) -> None:
        """``scale`` and ``clamp`` as above; the other arguments as for :class:`MaskedCoupling`."""
        super().__init__(shape, 2, **kwargs)
        self.clamp = clamp
        self.tanh_scale = nn.Parameter(torch.ones(len(self.transformed))) if scale == "tanh" else None

    def _shift_and_log_scale(self, h: Tensor) -> tuple[Tensor, Tensor]:
        shift, raw = h.unbind(-2)
        if self.tanh_scale is not None:
            return shift, self.tanh_scale * raw.tanh()
        return shift, (2 * self.clamp / math.pi) * torch.atan(raw / self.clamp)

    def _forward(self, x_t: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        shift, log_scale = self._shift_and_log_scale(h)
        return x_t * log_scale.exp() + shift, log_scale.sum(-1)

    def _inverse(self, y_t: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        shift, log_scale = self._shift_and_log_scale(h)
        return (y_t - shift) * (-log_scale).exp(), -log_scale.sum(-1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.couple(x, context, self._forward)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.couple(y, context, self._inverse)


class AdditiveCouplingParams(Params):
    """A coupling layer: mask, conditioner and optional context size."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"shape": [4], "hidden": [8]},
                {"shape": [5], "mask": "alternating", "flip": True, "hidden": [8], "context_features": 2},
                {"shape": [2, 2, 2], "mask": "checkerboard", "hidden": [4]},
            ]
        }
    )
    shape: EventShape = Field(..., description="event shape of x: [D] or [C, H, W]")
    mask: MaskKind = Field("half", description="binary mask m; its 1s are the conditioning part x_A")
    flip: bool = Field(False, description="swap the conditioning and transformed parts (m -> 1 - m)")
    hidden: list[PositiveInt] = Field([64, 64], description="hidden widths (mlp) or channels (conv) of the conditioner")
    conditioner: Literal["mlp", "conv"] | None = Field(
        None, description="conditioner network; None: conv for image shapes [C, H, W], mlp otherwise"
    )
    context_features: NonNegativeInt = Field(0, description="size of the context vector; 0: unconditional")

    @model_validator(mode="after")
    def _image_only_options(self) -> "AdditiveCouplingParams":
        image_only = {"mask": self.mask in ("checkerboard", "channel"), "conditioner": self.conditioner == "conv"}
        for field, needs_image in image_only.items():
            if needs_image and len(self.shape) != 3:
                raise ValueError(f"{field} {getattr(self, field)!r} needs an image shape [C, H, W], got {self.shape}")
        if self.mask == "channel" and self.shape[0] < 2:
            raise ValueError(f"mask 'channel' needs at least 2 channels, got shape {self.shape}")
        return self


class AffineCouplingParams(AdditiveCouplingParams):
    """An affine coupling layer; ``scale`` bounds its log-scale (``clamp`` bounds it to ±``clamp``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"shape": [4], "hidden": [8], "scale": "tanh"},
                {"shape": [5], "mask": "alternating", "hidden": [8, 8], "context_features": 3},
                {"shape": [4, 2, 2], "mask": "channel", "flip": True, "hidden": [4]},
                {"shape": [1, 4, 4], "mask": "checkerboard", "hidden": [4, 4], "context_features": 2},
            ]
        }
    )
    scale: Literal["tanh", "clamp"] = Field(
        "clamp", description="log-scale bound: tanh, s = a·tanh(s̃) with learned a; clamp, soft clamp to ±c"
    )
    clamp: PositiveFloat = Field(2.0, description="bound c of the log-scale, s = (2c/π)·arctan(s̃/c) (scale: clamp)")


def coupling_args(params: AdditiveCouplingParams) -> dict:
    """The keyword arguments every :class:`MaskedCoupling` takes, from its params."""
    return dict(
        shape=tuple(params.shape),
        mask=params.mask,
        flip=params.flip,
        hidden=params.hidden,
        conditioner=params.conditioner,
        context_features=params.context_features,
    )


def build_additive_coupling(params: AdditiveCouplingParams, ctx: object) -> AdditiveCoupling:
    """NICE additive coupling y = x + (1-m)·t(m·x) (Dinh et al. 2015)."""
    return AdditiveCoupling(**coupling_args(params))


def build_affine_coupling(params: AffineCouplingParams, ctx: object) -> AffineCoupling:
    """RealNVP affine coupling y = x·exp(s(m·x)) + t(m·x) with a bounded log-scale (Dinh et al. 2017)."""
    return AffineCoupling(**coupling_args(params), scale=params.scale, clamp=params.clamp)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType(
            "additive_coupling", "bijector", AdditiveCouplingParams, build_additive_coupling,
            aliases={"nice": "NICE is a stack of additive couplings; see specs/nice_digits.yaml"},
        ),
        ComponentType(
            "affine_coupling", "bijector", AffineCouplingParams, build_affine_coupling,
            aliases={"realnvp": "RealNVP is a stack of affine couplings; see specs/realnvp_digits.yaml"},
        ),
    ]
