"""Encoders q(z|x) and decoders p(x|z): a network followed by a distribution head.

Each wraps any ``network`` component (``mlp``; ``conv_encoder`` / ``conv_decoder``
for image-shaped data) and turns its output into a ``torch.distributions``
object whose ``log_prob`` sums the event dimensions.  All broadcast over
prepended sample dimensions (IWAE's ``k``).

A decoder whose distribution has ``P`` parameters per value reads the network's
output as ``(*batch, P, *event_shape)``: an MLP needs ``out_features = P·D``, a
``conv_decoder`` ``image_shape: [P·C, H, W]``.  The discretized logistic decoder
with ``channel_coupling`` (PixelCNN++'s RGB sub-pixel dependence) has ``P`` numbers
per pixel instead, read as ``(*batch, P, H, W)``.  ``discrete`` says whether
``log_prob`` is a probability mass (Bernoulli, categorical, discretized
logistic), which needs no change-of-variables term in data space.

Every encoder and decoder is also conditional: ``encoder(x, c)`` is q(z|x, c) and
``decoder(z, c)`` is p(x|z, c), the conditional VAE of Sohn et al. (2015), "Learning
Structured Output Representation using Deep Conditional Generative Models"; the
context ``c`` goes to a network with ``context_features``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal

from compose_gen import BuildContext, ComponentType, Params, Ref, Size, hookimpl
from compose_gen_plugins.latent.continuous_bernoulli import StableContinuousBernoulli
from compose_gen_plugins.networks import conditioned
from compose_gen_plugins.latent.discretized import (
    CoupledDiscretizedLogisticMixture,
    DiscretizedLogisticMixture,
    Grid,
    QuantizedCategorical,
)

__all__ = [
    "BernoulliDecoder",
    "CategoricalDecoder",
    "ContinuousBernoulliDecoder",
    "CoupledDiscretizedLogisticMixtureDecoder",
    "DiscretizedLogisticMixtureDecoder",
    "GaussianDecoder",
    "GaussianEncoder",
]

MIN_SCALE = 1e-4


def network_output(net: nn.Module, inputs: Tensor, context: Tensor | None) -> Tensor:
    """``net``'s output for ``inputs`` (and ``context``), in float32 where autocast ran it in half precision: the
    distribution it parameterises, and the log-densities summed from it, are computed in float32, which CPU autocast
    does not keep for sums (the ELBO of 64 pixels was 0.13 nats off in bfloat16)."""
    out = conditioned(net, inputs, context)
    return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out


def positive_scale(raw: Tensor) -> Tensor:
    """σ = softplus(raw) + 10⁻⁴: positive, and never so small that log σ or 1/σ blows up."""
    return F.softplus(raw) + MIN_SCALE


def require_width(out: Tensor, needed: int, formula: str, parts: str) -> None:
    """Refuse an encoder network's output whose last dimension is not the ``needed`` numbers (``formula``: what they are)."""
    if out.shape[-1] != needed:
        raise ValueError(f"the network gives {out.shape[-1]} numbers per example, this encoder needs {formula} = {needed} ({parts})")


class GaussianEncoder(nn.Module):
    """q(z|x) = N(z; μ(x), diag σ²(x)), the amortised posterior of Kingma & Welling (2014).

    The network outputs ``2·latent`` numbers: μ and a raw scale mapped through
    softplus (more stable than exp for large activations).  Given a context c,
    μ and σ are functions of (x, c).
    """

    def __init__(self, net: nn.Module, latent: int) -> None:
        super().__init__()
        self.net = net
        self.latent = latent

    def forward(self, x: Tensor, context: Tensor | None = None) -> Distribution:
        out = network_output(self.net, x, context)
        require_width(out, 2 * self.latent, "2·latent", f"μ and σ of each of the {self.latent} latents")
        loc, raw = out.split(self.latent, dim=-1)
        return Independent(Normal(loc, positive_scale(raw), validate_args=False), 1, validate_args=False)


class _Decoder(nn.Module):
    """A network whose output, reshaped to ``event_shape``, parameterises p(x|z).

    ``latent_rank`` is the number of event dimensions of z (1 for vectors, 3
    for spatial latents); the dimensions before them are batch dimensions.
    """

    def __init__(self, net: nn.Module, event_shape: tuple[int, ...], latent_rank: int = 1) -> None:
        super().__init__()
        self.net = net
        self.event_shape = torch.Size(event_shape)
        self.latent_rank = latent_rank

    #: Whether ``log_prob`` is a probability mass rather than a density.
    discrete = False

    def output(self, z: Tensor, context: Tensor | None, parts: int, shape: tuple[int, ...] | None = None) -> Tensor:
        """The network's output as ``(*batch, parts, *shape)``, by default ``shape = event_shape``."""
        batch = z.shape[: z.dim() - self.latent_rank]
        out = network_output(self.net, z, context)
        return self._reshaped(out, (*batch, parts, *(self.event_shape if shape is None else shape)), self._rank_hint(z))

    def params(self, z: Tensor, context: Tensor | None, parts: int = 1) -> tuple[Tensor, ...]:
        """The network's output split into ``parts`` tensors of shape ``batch + event_shape``."""
        if parts == 1:
            out, shape = network_output(self.net, z, context), (*z.shape[: z.dim() - self.latent_rank], *self.event_shape)
            return (out if out.shape == shape else self._reshaped(out, shape, self._rank_hint(z)),)
        out = self.output(z, context, parts)
        return out.unbind(out.dim() - len(self.event_shape) - 1)

    def _rank_hint(self, z: Tensor) -> tuple[int, str]:
        """The number of batch dimensions of ``z``, and what to say of ``latent_rank`` when it leaves none: a batch of
        vectors read with ``latent_rank: 2`` is one latent, and its output size then looks wrong, not the rank."""
        batch_dims = z.dim() - self.latent_rank
        if batch_dims > 0:
            return batch_dims, ""
        return max(batch_dims, 0), (
            f"; but first, z of shape {tuple(z.shape)} has no batch dimension before the last {self.latent_rank} that "
            f"latent_rank: {self.latent_rank} reads as one latent: latent_rank is the latent's own number of dimensions "
            "(1 for vectors, 3 for (C, H, W) maps)"
        )

    def _reshaped(self, out: Tensor, shape: tuple[int, ...], rank_hint: tuple[int, str]) -> Tensor:
        """``out`` as ``shape``; a network of the wrong output size is told what size this decoder needs."""
        try:
            return out.reshape(shape)
        except RuntimeError:
            batch_dims, hint = rank_hint
            per_example = tuple(shape[batch_dims:])
            given, needed = out.shape[batch_dims:].numel(), math.prod(per_example)
            fix = f"an mlp's out_features: {needed}"
            if len(per_example) == 4:  # (parameters, C, H, W): an image's channels times the parameters of each pixel
                fix = f"a conv_decoder's image_shape: [{per_example[0] * per_example[1]}, {per_example[2]}, {per_example[3]}], or {fix}"
            raise ValueError(
                f"the network gives {given} numbers per example, this decoder needs {needed} "
                f"(shape {per_example}: the distribution's parameters for each value of x): give {fix}{hint}"
            ) from None

    def independent(self, elementwise: Distribution) -> Distribution:
        """``elementwise`` with the event dimensions of x summed in ``log_prob``."""
        return Independent(elementwise, len(self.event_shape), validate_args=False)


class BernoulliDecoder(_Decoder):
    """p(x|z) = ∏ Bernoulli(x_i; sigmoid(f(z)_i)) for binary data (Kingma & Welling 2014)."""

    discrete = True

    def forward(self, z: Tensor, context: Tensor | None = None) -> Distribution:
        (logits,) = self.params(z, context)
        return self.independent(Bernoulli(logits=logits, validate_args=False))


class ContinuousBernoulliDecoder(_Decoder):
    """p(x|z) = ∏ CB(x_i; λ_i), the normalised Bernoulli for data in [0, 1] (Loaiza-Ganem & Cunningham 2019), computed
    from the logits so that it stays exact where λ nears 0 or 1 (:class:`.StableContinuousBernoulli`)."""

    #: Its density at x = 0 (or 1), C(λ)(1 − λ), grows without bound as λ → 0 (or 1): data taking those values exactly
    #: let the loss fall forever (slowly, as log log 1/λ), and no likelihood of discrete data is bounded by it.
    unbounded_at_0_and_1 = True

    def forward(self, z: Tensor, context: Tensor | None = None) -> Distribution:
        (logits,) = self.params(z, context)
        return self.independent(StableContinuousBernoulli(logits=logits, validate_args=False))


class GaussianDecoder(_Decoder):
    """p(x|z) = N(x; μ(z), diag σ²), with σ fixed, learned per dimension, or predicted by the network."""

    def __init__(
        self, net: nn.Module, event_shape: tuple[int, ...], latent_rank: int, scale: str, fixed_scale: float
    ) -> None:
        super().__init__(net, event_shape, latent_rank)
        self.scale_mode = scale
        if scale == "learned":
            # softplus⁻¹(s) = log(eˢ − 1) = s + log(1 − e⁻ˢ), which stays finite where eˢ overflows (s ≥ 710)
            self.raw_scale = nn.Parameter(torch.full(self.event_shape, fixed_scale + math.log(-math.expm1(-fixed_scale))))
        else:
            self.fixed_scale = fixed_scale  # a number, exact in any dtype

    def forward(self, z: Tensor, context: Tensor | None = None) -> Distribution:
        if self.scale_mode == "predicted":
            loc, raw = self.params(z, context, parts=2)
            scale = positive_scale(raw)
        else:
            (loc,) = self.params(z, context)
            scale = positive_scale(self.raw_scale) if self.scale_mode == "learned" else torch.full_like(loc, self.fixed_scale)
        return self.independent(Normal(loc, scale.expand_as(loc), validate_args=False))


class CategoricalDecoder(_Decoder):
    """p(x|z) = ∏ Cat(x_i; softmax(f(z)_i)) over the ``bins`` levels of ``[low, high]`` (van den Oord et al. 2016)."""

    discrete = True

    def __init__(self, net: nn.Module, event_shape: tuple[int, ...], latent_rank: int, grid: Grid) -> None:
        super().__init__(net, event_shape, latent_rank)
        self.grid = grid

    def forward(self, z: Tensor, context: Tensor | None = None) -> Distribution:
        out = self.output(z, context, self.grid.bins)
        logits = out.movedim(out.dim() - len(self.event_shape) - 1, -1)
        return self.independent(QuantizedCategorical(logits, self.grid))


class DiscretizedLogisticMixtureDecoder(_Decoder):
    """p(x|z) = ∏ Σ_k π_k(z) [σ((x_i + h − μ_ik)/s_ik) − σ((x_i − h − μ_ik)/s_ik)] (Salimans et al. 2017, PixelCNN++).

    The network gives ``3·components`` numbers per value: mixture logits, locations
    (in ``[−1, 1]`` grid units) and log-scales.
    """

    discrete = True

    def __init__(
        self, net: nn.Module, event_shape: tuple[int, ...], latent_rank: int, grid: Grid, components: int
    ) -> None:
        super().__init__(net, event_shape, latent_rank)
        self.grid, self.components = grid, components

    def forward(self, z: Tensor, context: Tensor | None = None) -> Distribution:
        out = self.output(z, context, 3 * self.components)
        axis = out.dim() - len(self.event_shape) - 1
        out = out.unflatten(axis, (3, self.components)).movedim(axis + 1, -1)
        logits, loc, log_scale = out.unbind(axis)
        return self.independent(DiscretizedLogisticMixture(logits, loc, log_scale, self.grid))


class CoupledDiscretizedLogisticMixtureDecoder(DiscretizedLogisticMixtureDecoder):
    """p(x|z) = ∏_pixels Σ_k π_k P(x_R|μ̃_Rk) P(x_G|μ̃_Gk) P(x_B|μ̃_Bk) for RGB images (Salimans et al. 2017, §2.2).

    One mixture per pixel shared by the channels, μ̃_G = μ_G + α·x_R and
    μ̃_B = μ_B + β·x_R + γ·x_G (:class:`.discretized.CoupledDiscretizedLogisticMixture`).

    The event shape is ``(3, *spatial)``; the network gives ``10·components`` numbers
    per pixel, read as ``(10·K, *spatial)``: K mixture logits, then per channel K
    locations, K log-scales and K raw coefficients (α, β, γ = tanh of them).
    """

    def __init__(
        self, net: nn.Module, event_shape: tuple[int, ...], latent_rank: int, grid: Grid, components: int
    ) -> None:
        if len(event_shape) == 0 or event_shape[0] != 3:
            raise ValueError(
                "channel_coupling couples the R, G and B channels: it needs an event shape (3, H, W), "
                f"got {tuple(event_shape)}"
            )
        super().__init__(net, event_shape, latent_rank, grid, components)

    def forward(self, z: Tensor, context: Tensor | None = None) -> Distribution:
        k, spatial = self.components, self.event_shape[1:]
        out = self.output(z, context, 10 * k, spatial)
        out = out.movedim(out.dim() - len(spatial) - 1, -1)  # (*batch, *spatial, 10·K)
        logits, loc, log_scale, raw = out.split([k, 3 * k, 3 * k, 3 * k], dim=-1)
        loc, log_scale, raw = (t.unflatten(-1, (3, k)) for t in (loc, log_scale, raw))
        return CoupledDiscretizedLogisticMixture(logits, loc, log_scale, torch.tanh(raw), self.grid, len(spatial))


class EncoderParams(Params):
    net: Ref("network") = Field(..., description="network mapping x to 2·latent numbers")  # type: ignore[valid-type]
    latent: int = Field(..., gt=0, description="size of z; the network gives 2·latent numbers")


class DecoderParams(Params):
    net: Ref("network") = Field(  # type: ignore[valid-type]
        ...,
        description="network mapping z to the distribution's parameters: per value of x, 1 (Bernoulli, continuous Bernoulli, "
        "Gaussian), 2 (Gaussian with scale: predicted), bins (categorical), 3·components (discretized logistic; "
        "10·components per pixel with channel_coupling); an MLP's out_features is that times the values of x",
    )
    event_shape: list[Size] | None = Field(None, description="shape of one x; default: the data's")
    latent_rank: int = Field(1, gt=0, description="event dimensions of z (1: vectors)")


class GaussianDecoderParams(DecoderParams):
    scale: Literal["fixed", "learned", "predicted"] = Field(
        "learned", description="σ: fixed, learned per dimension, or predicted by the network"
    )
    fixed_scale: float = Field(1.0, gt=0, description="σ when fixed; initial σ when learned")

    @model_validator(mode="after")
    def _scale_not_set_twice(self) -> "GaussianDecoderParams":
        if self.scale == "predicted" and self.fixed_scale != 1.0:  # not fields_set: a resolved spec holds the default
            raise ValueError("fixed_scale is σ when fixed or learned; with scale: predicted the network gives σ, so drop fixed_scale")
        return self


class GridParams(Params):
    bins: int = Field(256, ge=2, description="number of levels of a value")
    low: float = Field(0.0, description="value of the lowest level")
    high: float = Field(1.0, description="value of the highest level")


class CategoricalDecoderParams(DecoderParams, GridParams):
    pass


class DiscretizedLogisticDecoderParams(DecoderParams, GridParams):
    components: int = Field(5, gt=0, description="logistics in the mixture")
    channel_coupling: bool = Field(
        False,
        description="RGB images (event shape (3, H, W)): one mixture per pixel, G's and B's means shifted linearly "
        "by the earlier channels (PixelCNN++ §2.2); the network gives 10·components numbers per pixel",
    )


def _event_shape(p: DecoderParams, ctx: BuildContext) -> tuple[int, ...]:
    if p.event_shape is not None:
        return tuple(p.event_shape)
    if ctx.data is None:
        raise ValueError("event_shape is required when the spec has no data")
    return tuple(_data_x(ctx).shape[1:])


def _data_x(ctx: BuildContext) -> Tensor:
    """The data's field x, which a decoder without ``event_shape`` models; a clear error where the data have none."""
    assert ctx.data is not None
    fields = ctx.data.train.fields
    if "x" not in fields:
        have = ", ".join(f"{name} {list(t.shape[1:])}" for name, t in fields.items())
        raise ValueError(
            f"the data have no field x (they have {have}), so the decoder cannot take its shape from them: "
            "set its event_shape to the shape of the field it models"
        )
    return fields["x"]


def build_gaussian_encoder(p: EncoderParams, ctx: BuildContext) -> GaussianEncoder:
    """Diagonal-Gaussian encoder q(z|x) = N(μ(x), diag σ²(x)).

    q(z|x) = Π_j (2π σ_j(x)²)^{−1/2} exp(−(z_j − μ_j(x))² / (2σ_j(x)²)),  j = 1..latent,
    the network's 2·latent outputs read as [μ, ρ] with σ = softplus(ρ) + 10⁻⁴; draws z = μ + σ ⊙ ε, ε ~ N(0, I)
    (reparameterised).  Given a context c, μ and σ are functions of (x, c).

    Kingma & Welling 2014, "Auto-Encoding Variational Bayes".
    """
    return GaussianEncoder(ctx.component(p.net), p.latent)


def _modelled_x(p: DecoderParams, ctx: BuildContext) -> Tensor | None:
    """The data's x when the decoder models them (it takes their shape), else None."""
    return _data_x(ctx) if p.event_shape is None and ctx.data is not None else None


def build_bernoulli_decoder(p: DecoderParams, ctx: BuildContext) -> BernoulliDecoder:
    """Bernoulli decoder p(x|z) for binary data.

    p(x|z) = Π_i λ_i^{x_i} (1 − λ_i)^{1 − x_i},  x_i ∈ {0, 1},  λ = sigmoid(f(z)), one logit per value of x;
    a probability mass, so log p(x|z) ≤ 0 and no change of variables enters the likelihood.

    Kingma & Welling 2014, "Auto-Encoding Variational Bayes".
    """
    x = _modelled_x(p, ctx)
    if x is not None and not ((x == 0) | (x == 1)).all():
        raise ValueError(
            f"a Bernoulli decoder is a likelihood of binary x, but the data's x take values in [{x.min().item():g}, "
            f"{x.max().item():g}] besides 0 and 1, where its log-probability is a cross-entropy, not a log-likelihood: "
            "binarize the data (a dataset's `transforms: [binarize]`, or `{type: binarize, mode: bernoulli}`), use a discrete decoder "
            "(categorical_decoder, discretized_logistic_decoder) for grey levels, or continuous_bernoulli_decoder for values in [0, 1] "
            "that are continuous (Loaiza-Ganem & Cunningham 2019): on grey levels, dequantize them first"
        )
    return BernoulliDecoder(ctx.component(p.net), _event_shape(p, ctx), p.latent_rank)


def build_continuous_bernoulli_decoder(p: DecoderParams, ctx: BuildContext) -> ContinuousBernoulliDecoder:
    """Continuous-Bernoulli decoder p(x|z) for data in [0, 1].

    p(x|z) = Π_i C(λ_i) λ_i^{x_i} (1 − λ_i)^{1 − x_i},  x_i ∈ [0, 1],  λ = sigmoid(f(z)),
    C(λ) = 2 artanh(1 − 2λ) / (1 − 2λ) for λ ≠ 1/2, C(1/2) = 2: the Bernoulli's form normalised into a density
    on [0, 1]; its mean is λ/(2λ − 1) + 1/(2 artanh(1 − 2λ)), not λ.  Both are computed from the logit L = f(z)
    (C = L / tanh(L/2)), which keeps them exact where λ is within float precision of 0 or 1.

    Loaiza-Ganem & Cunningham 2019, "The continuous Bernoulli: fixing a pervasive error in variational autoencoders".
    """
    x = _modelled_x(p, ctx)
    if x is not None and ((x < 0) | (x > 1)).any():
        raise ValueError(
            f"a continuous Bernoulli decoder is a density on [0, 1], but the data's x reach [{x.min().item():g}, "
            f"{x.max().item():g}]: scale them into [0, 1] (the dataset's `scale: true`, or a `scale` transform)"
        )
    return ContinuousBernoulliDecoder(ctx.component(p.net), _event_shape(p, ctx), p.latent_rank)


def build_gaussian_decoder(p: GaussianDecoderParams, ctx: BuildContext) -> GaussianDecoder:
    """Diagonal-Gaussian decoder p(x|z) with fixed, learned or predicted scale.

    p(x|z) = Π_i (2π σ_i²)^{−1/2} exp(−(x_i − μ_i(z))² / (2σ_i²)),
    μ = f(z); σ_i = fixed_scale (fixed), softplus(ρ_i) + 10⁻⁴ with ρ learned per value of x, starting at σ ≈
    fixed_scale (learned), or softplus of the network's second output + 10⁻⁴ (predicted: f(z) gives [μ, ρ]).

    Kingma & Welling 2014, "Auto-Encoding Variational Bayes" (the Gaussian MLP decoder, appendix C.2).
    """
    return GaussianDecoder(ctx.component(p.net), _event_shape(p, ctx), p.latent_rank, p.scale, p.fixed_scale)


def _grid(p: CategoricalDecoderParams | DiscretizedLogisticDecoderParams, ctx: BuildContext) -> Grid:
    """The decoder's levels, checked against the data's x when the decoder models them."""
    grid = Grid(p.bins, p.low, p.high)
    x = _modelled_x(p, ctx)
    if x is not None:
        grid.check(x, "the data's x")
    return grid


def build_categorical_decoder(p: CategoricalDecoderParams, ctx: BuildContext) -> CategoricalDecoder:
    """Categorical decoder p(x|z): a softmax over the levels of each value.

    p(x|z) = Π_i softmax(f(z)_i)_{k(x_i)},  v_k = low + k (high − low)/(bins − 1), k = 0..bins−1,
    with k(x_i) the level of x_i and f(z)_i the bins logits of value i; a probability mass.

    van den Oord et al. 2016, "Pixel Recurrent Neural Networks" (a 256-way softmax per sub-pixel).
    """
    return CategoricalDecoder(ctx.component(p.net), _event_shape(p, ctx), p.latent_rank, _grid(p, ctx))


def build_discretized_logistic_decoder(
    p: DiscretizedLogisticDecoderParams, ctx: BuildContext
) -> DiscretizedLogisticMixtureDecoder:
    """Discretized logistic mixture decoder p(x|z) of PixelCNN++ (Salimans et al. 2017).

    P(x|z) = Π_i Σ_k π_ik [σ((x_i + h − μ_ik)/s_ik) − σ((x_i − h − μ_ik)/s_ik)],  k = 1..components,
    in the grid's units ([low, high] mapped to [−1, 1], half-width h = 1/(bins − 1)); the lowest level takes the mass
    below it (σ(·) of its lower edge is 0), the highest the mass above it (σ(·) of its upper edge is 1); log s ≥ −7.
    π, μ and log s come from f(z), 3·components numbers per value.  With ``channel_coupling`` one mixture per RGB
    pixel, its component shared by the channels, whose means shift as μ̃_G = μ_G + α x_R, μ̃_B = μ_B + β x_R + γ x_G,
    α, β, γ = tanh of network outputs (10·components numbers per pixel).

    Salimans et al. 2017, "PixelCNN++: Improving the PixelCNN with Discretized Logistic Mixture Likelihood and Other
    Modifications".
    """
    decoder = CoupledDiscretizedLogisticMixtureDecoder if p.channel_coupling else DiscretizedLogisticMixtureDecoder
    return decoder(ctx.component(p.net), _event_shape(p, ctx), p.latent_rank, _grid(p, ctx), p.components)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("gaussian_encoder", "encoder", EncoderParams, build_gaussian_encoder),
        ComponentType("bernoulli_decoder", "decoder", DecoderParams, build_bernoulli_decoder),
        ComponentType("continuous_bernoulli_decoder", "decoder", DecoderParams, build_continuous_bernoulli_decoder),
        ComponentType("gaussian_decoder", "decoder", GaussianDecoderParams, build_gaussian_decoder),
        ComponentType("categorical_decoder", "decoder", CategoricalDecoderParams, build_categorical_decoder),
        ComponentType("discretized_logistic_decoder", "decoder", DiscretizedLogisticDecoderParams, build_discretized_logistic_decoder),
    ]
