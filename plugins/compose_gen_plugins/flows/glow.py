r"""Glow (Kingma & Dhariwal 2018, arXiv:1807.03039) and the multi-scale architecture.

A Glow step is actnorm → invertible 1x1 convolution → affine coupling with a
convolutional conditioner (channel mask).  The multi-scale architecture of RealNVP
(Dinh et al. 2017, arXiv:1605.08803) squeezes, runs ``steps`` steps and factors
out half of the channels at every level; the factored-out latents are written,
flattened, into the output vector, so the flow maps ``(C, H, W)`` to ``(C·H·W,)``
and inverts exactly.  Channel-wise layers act on the first event dimension, so
actnorm and the 1x1 convolution also work on vectors ``(D,)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator
from torch import Tensor, nn

from compose_gen import Bijector, BuildContext, Chain, ComponentType, Latch, Params, hookimpl, sum_over_processes
from compose_gen_plugins.flows import EventShape, context_shape_of
from compose_gen_plugins.flows.coupling import AffineCoupling

__all__ = ["ActNorm", "InvertibleConv1x1", "MultiScale", "Squeeze", "glow", "glow_step"]


class _ChannelWise(Bijector):
    """Helpers for layers acting on the first event dimension (channels), shared by every pixel."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__(shape)
        self.channels, self.pixels = shape[0], math.prod(shape[1:])

    def _per_channel(self, v: Tensor) -> Tensor:
        return v.reshape(-1, *[1] * (len(self.event_shape) - 1))

    def _constant_ladj(self, x: Tensor, value: Tensor) -> Tensor:
        return (self.pixels * value).expand(self.batch_shape(x))


class ActNorm(_ChannelWise):
    r"""Activation normalisation :math:`y = (x - \mu) \odot e^{-\log\sigma}` per channel (Kingma & Dhariwal 2018).

    :math:`\log|\det J| = -HW \sum_c \log\sigma_c`.  On the first ``forward`` call in
    training mode, :math:`\mu` and :math:`\sigma` are set to the per-channel mean and
    standard deviation of the batch, so the output starts standardised (a channel
    constant over that batch, as every channel of a batch of one is, keeps :math:`\sigma = 1`:
    dividing by its zero spread would blow up every later batch).  The
    ``initialized`` latch is part of the ``state_dict``: a restored checkpoint
    does not initialise again.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__(shape)
        self.loc = nn.Parameter(torch.zeros(self.channels))
        self.log_scale = nn.Parameter(torch.zeros(self.channels))
        self.initialized = Latch()

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set the location and scale from the per-channel statistics of ``x``, over the global batch under
        data parallelism (each process's sums combined, so every process starts as one process would)."""
        values = x.movedim(-len(self.event_shape), -1).reshape(-1, self.channels)
        count, total = values.new_tensor(float(len(values))), values.sum(0)
        sum_over_processes(count, total)
        mean = total / count
        squares = (values - mean).square().sum(0)
        sum_over_processes(squares)
        spread = (squares / count).sqrt()
        if bool(spread.isinf().any()):  # squares of a spread past ~1.8e19 overflow float32 (NaN inputs are another's to name)
            raise ValueError(
                f"actnorm: the first batch's values spread so far (per-channel means {mean.tolist()[:4]}...) that their variance "
                f"overflows {str(values.dtype).removeprefix('torch.')}; scale the data first (a `scale` transform)"
            )
        self.loc.copy_(mean)
        self.log_scale.copy_(torch.where(spread > 0, (spread + 1e-6).log(), torch.zeros_like(spread)))
        self.initialized.set()

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and not x.is_meta and not self.initialized:
            self.initialize(x)
        y = (x - self._per_channel(self.loc)) * self._per_channel(-self.log_scale).exp()
        return y, self._constant_ladj(x, -self.log_scale.sum())

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = y * self._per_channel(self.log_scale).exp() + self._per_channel(self.loc)
        return x, self._constant_ladj(y, self.log_scale.sum())


class InvertibleConv1x1(_ChannelWise):
    r"""Invertible 1x1 convolution :math:`y_{:,h,w} = W x_{:,h,w}` (Kingma & Dhariwal 2018).

    A learned generalisation of a channel permutation.

    :math:`\log|\det J| = HW \log|\det W|`.  ``W`` starts as a random rotation.  In
    LU form :math:`W = P L (U + \operatorname{diag}(\mathrm{sign}(s)\, e^{\log|s|}))`
    with :math:`P` and :math:`\mathrm{sign}(s)` fixed, so :math:`\log|\det W| = \sum \log|s|`
    costs :math:`O(C)`; the dense form uses ``slogdet``.
    """

    def __init__(self, shape: tuple[int, ...], lu: bool = True) -> None:
        super().__init__(shape)
        rotation = torch.linalg.qr(torch.randn(self.channels, self.channels))[0]
        self.lu = lu
        if lu:
            permutation, lower, upper = torch.linalg.lu(rotation)
            self.register_buffer("permutation", permutation)
            self.register_buffer("sign", upper.diagonal().sign())
            self.lower = nn.Parameter(lower)
            self.upper = nn.Parameter(upper)
            self.log_scale = nn.Parameter(upper.diagonal().abs().log())
        else:
            self.weight = nn.Parameter(rotation)

    def weight_and_log_det(self) -> tuple[Tensor, Tensor]:
        """The matrix :math:`W` and :math:`\\log|\\det W|`."""
        if not self.lu:
            return self.weight, torch.linalg.slogdet(self.weight).logabsdet
        eye = torch.eye(self.channels, dtype=self.lower.dtype, device=self.lower.device)
        diagonal = torch.diag(self.sign * self.log_scale.exp())
        return self.permutation @ (self.lower.tril(-1) + eye) @ (self.upper.triu(1) + diagonal), self.log_scale.sum()

    def _mix(self, x: Tensor, weight: Tensor) -> Tensor:
        channel = -len(self.event_shape)
        return (x.movedim(channel, -1) @ weight.T).movedim(-1, channel)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        weight, log_det = self.weight_and_log_det()
        return self._mix(x, weight), self._constant_ladj(x, log_det)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        weight, log_det = self.weight_and_log_det()
        return self._mix(y, torch.linalg.inv(weight)), self._constant_ladj(y, -log_det)


class Squeeze(Bijector):
    r"""Space-to-depth :math:`(C, H, W) \to (4C, H/2, W/2)`: every 2x2 patch becomes 4 channels (Dinh et al. 2017).

    A permutation: :math:`\log|\det J| = 0`.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 3 or shape[1] % 2 or shape[2] % 2:
            raise ValueError(f"squeeze needs an image shape [C, H, W] with even H and W, got {list(shape)}")
        super().__init__(shape)

    @property
    def out_event_shape(self) -> torch.Size:
        c, h, w = self.event_shape
        return torch.Size((4 * c, h // 2, w // 2))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        c, h, w = self.event_shape
        patches = x.reshape(-1, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return patches.reshape(*x.shape[:-3], *self.out_event_shape), x.new_zeros(x.shape[:-3])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        c, h, w = self.event_shape
        pixels = y.reshape(-1, c, 2, 2, h // 2, w // 2).permute(0, 1, 4, 2, 5, 3)
        return pixels.reshape(*y.shape[:-3], c, h, w), y.new_zeros(y.shape[:-3])


class MultiScale(Bijector):
    r"""One level of the multi-scale architecture, recursively (Dinh et al. 2017).

    :math:`f(x) = [\operatorname{flatten}(z), g(h)]` where :math:`(z, h)` splits the
    channels of :math:`\mathrm{level}(x)` in halves and :math:`g` is the next
    level (absent at the last one, which outputs :math:`\operatorname{flatten}(\mathrm{level}(x))`).
    :math:`\log|\det J| = \log|\det J_\mathrm{level}| + \log|\det J_g|`; the
    inverse reads ``z`` back from its slot in the vector, so it is exact.
    """

    def __init__(self, level: Bijector, inner: Bijector | None = None) -> None:
        super().__init__(level.event_shape)
        self.level, self.inner = level, inner
        shape = level.out_event_shape
        self.kept = shape if inner is None else torch.Size((shape[0] - shape[0] // 2, *shape[1:]))
        self.factored = torch.Size((shape[0] - self.kept[0], *shape[1:]))
        if inner is not None and inner.event_shape != self.kept:
            raise ValueError(f"the next level takes {tuple(inner.event_shape)}, not the kept half {tuple(self.kept)}")
        self.context_shape = context_shape_of(self)

    @property
    def out_event_shape(self) -> torch.Size:
        return torch.Size((self.event_shape.numel(),))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h, ladj = self.level(x, context)
        if self.inner is None:
            return h.flatten(-len(self.kept)), ladj
        z, kept = h.split([self.factored[0], self.kept[0]], dim=-len(self.kept))
        y, inner_ladj = self.inner(kept, context)
        return torch.cat([z.flatten(-len(self.factored)), y], -1), ladj + inner_ladj

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.inner is None:
            return self.level.inverse(y.unflatten(-1, self.kept), context)
        z, rest = y.split([self.factored.numel(), self.kept.numel()], dim=-1)
        kept, inner_ladj = self.inner.inverse(rest, context)
        x, ladj = self.level.inverse(torch.cat([z.unflatten(-1, self.factored), kept], -len(self.kept)), context)
        return x, ladj + inner_ladj


def glow_step(shape: tuple[int, ...], lu: bool = True, **coupling: Any) -> list[Bijector]:
    """One Glow step: actnorm, invertible 1x1 convolution, affine coupling with a conv conditioner."""
    coupling = dict(mask="channel", conditioner="conv") | coupling
    return [ActNorm(shape), InvertibleConv1x1(shape, lu), AffineCoupling(shape, **coupling)]


def glow(
    shape: tuple[int, int, int],
    levels: int = 2,
    steps: int = 4,
    hidden: Sequence[int] = (64, 64),
    lu: bool = True,
    scale: Literal["tanh", "clamp"] = "clamp",
    clamp: float = 2.0,
    context_features: int = 0,
) -> MultiScale:
    """The Glow multi-scale flow: per level squeeze, ``steps`` Glow steps, factor out half."""
    coupling = dict(hidden=list(hidden), scale=scale, clamp=clamp, context_features=context_features)
    chains = []
    for _ in range(levels):
        squeeze = Squeeze(tuple(shape))
        s = tuple(squeeze.out_event_shape)
        chains.append(Chain([squeeze, *(layer for _ in range(steps) for layer in glow_step(s, lu, **coupling))]))
        shape = (s[0] - s[0] // 2, *s[1:])
    inner = None
    for chain in reversed(chains):
        inner = MultiScale(chain, inner)
    return inner


class ChannelWiseParams(Params):
    """A channel-wise layer on event shape ``[D]`` or ``[C, H, W]``."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"shape": [3]}, {"shape": [2, 3, 2]}]})
    shape: EventShape = Field(..., description="event shape [D] or [C, H, W]; channels are its first dimension")


class Conv1x1Params(ChannelWiseParams):
    """An invertible 1x1 convolution, LU-decomposed or dense."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"shape": [3, 2, 2]}, {"shape": [4], "lu": False}]})
    lu: bool = Field(True, description="LU form of W, log|det W| = Σ log|s| in O(C); false: dense W, slogdet")


class SqueezeParams(Params):
    """Squeeze of an image of shape ``[C, H, W]`` (even ``H`` and ``W``)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"shape": [1, 4, 2]}]})
    shape: EventShape = Field(..., description="image shape [C, H, W] with even H and W")

    @model_validator(mode="after")
    def _even_image(self) -> "SqueezeParams":
        if len(self.shape) != 3 or self.shape[1] % 2 or self.shape[2] % 2:
            raise ValueError(f"squeeze needs an image shape [C, H, W] with even H and W, got {self.shape}")
        return self


class GlowParams(Params):
    """The Glow multi-scale flow on images ``[C, H, W]``; ``H`` and ``W`` divisible by ``2**levels``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"shape": [1, 4, 4], "levels": 2, "steps": 1, "hidden": [8]},
                {"shape": [2, 2, 2], "levels": 1, "steps": 2, "hidden": [4], "lu": False, "context_features": 2},
            ]
        }
    )
    shape: EventShape = Field(..., description="image shape [C, H, W]")
    levels: PositiveInt = Field(2, description="multi-scale levels: squeeze, steps, factor out half the channels")
    steps: PositiveInt = Field(4, le=1000, description="Glow steps (actnorm, 1x1 conv, affine coupling) per level, at most 1000")
    hidden: list[PositiveInt] = Field([64, 64], description="hidden channels of the couplings' conv conditioners")
    lu: bool = Field(True, description="LU form of the 1x1 convolutions' W; false: dense W")
    scale: Literal["tanh", "clamp"] = Field(
        "clamp", description="couplings' log-scale bound: tanh, a·tanh(s̃) with learned a; clamp, to ±c"
    )
    clamp: PositiveFloat = Field(2.0, description="bound c of the couplings' log-scale (scale: clamp)")
    context_features: NonNegativeInt = Field(0, description="size of the context vector; 0: unconditional")

    @model_validator(mode="after")
    def _divisible_image(self) -> "GlowParams":
        side = 2**self.levels
        if len(self.shape) != 3 or self.shape[1] % side or self.shape[2] % side:
            raise ValueError(
                f"glow with {self.levels} levels needs [C, H, W] with H, W divisible by {side}, got {self.shape}"
            )
        return self


def build_actnorm(params: ChannelWiseParams, ctx: BuildContext) -> ActNorm:
    """Actnorm y = (x - μ)·exp(-log σ) per channel, data-initialised (Kingma & Dhariwal 2018).

    y_{c,h,w} = (x_{c,h,w} − μ_c) / σ_c,  log|det ∂y/∂x| = −HW Σ_c log σ_c  (HW = 1 for vectors [D]),
    μ_c and σ_c set to the channel's mean and standard deviation over the first training batch, then learned.

    Kingma & Dhariwal 2018, "Glow: Generative Flow with Invertible 1x1 Convolutions".
    """
    return ActNorm(tuple(params.shape))


def build_conv1x1(params: Conv1x1Params, ctx: BuildContext) -> InvertibleConv1x1:
    """Invertible 1x1 convolution y = W x per pixel, dense or LU (Kingma & Dhariwal 2018).

    y_{:,h,w} = W x_{:,h,w},  log|det ∂y/∂x| = HW log|det W|;  W starts as a random rotation.  LU form
    W = P L (U + diag(sign(s) ⊙ exp(log|s|))), L unit lower- and U strictly upper-triangular, P and sign(s) fixed,
    so log|det W| = Σ_c log|s_c|; dense W uses slogdet.

    Kingma & Dhariwal 2018, "Glow: Generative Flow with Invertible 1x1 Convolutions".
    """
    return InvertibleConv1x1(tuple(params.shape), params.lu)


def build_squeeze(params: SqueezeParams, ctx: BuildContext) -> Squeeze:
    """Squeeze (C, H, W) → (4C, H/2, W/2) (Dinh et al. 2017).

    y_{4c + 2i + j, a, b} = x_{c, 2a + i, 2b + j},  i, j ∈ {0, 1}: each 2x2 patch of a channel becomes 4 channels;
    a permutation, so log|det ∂y/∂x| = 0.

    Dinh et al. 2017, "Density Estimation Using Real NVP".
    """
    return Squeeze(tuple(params.shape))


def build_glow(params: GlowParams, ctx: BuildContext) -> MultiScale:
    """Glow multi-scale flow, (C, H, W) → (C·H·W,) (Kingma & Dhariwal 2018).

    Level ℓ = 1..L (L = levels) maps its input h_{ℓ−1} (h_0 = x) by g_ℓ: a squeeze, then ``steps`` Glow steps
    (actnorm, invertible 1x1 convolution, affine coupling y = m ⊙ x + (1 − m) ⊙ (x ⊙ exp(s(m ⊙ x, c)) + t(m ⊙ x, c))
    with a convolutional conditioner and channel mask); every level but the last factors out ⌊C_ℓ/2⌋ channels z_ℓ
    of g_ℓ(h_{ℓ−1}) and passes the rest on as h_ℓ, the last outputs z_L = g_L(h_{L−1}).
    f(x) = [z_1, …, z_L] flattened,  log|det J_f(x)| = Σ_ℓ log|det J_{g_ℓ}(h_{ℓ−1})|, the sum over every step's.

    Kingma & Dhariwal 2018, "Glow: Generative Flow with Invertible 1x1 Convolutions"; multi-scale architecture:
    Dinh et al. 2017, "Density Estimation Using Real NVP".
    """
    return glow(**params.model_dump())


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("actnorm", "bijector", ChannelWiseParams, build_actnorm),
        ComponentType("invertible_conv1x1", "bijector", Conv1x1Params, build_conv1x1),
        ComponentType("squeeze", "bijector", SqueezeParams, build_squeeze),
        ComponentType("glow", "bijector", GlowParams, build_glow),
    ]
