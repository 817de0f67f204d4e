"""Encoders q(z|x) and decoders p(x|z): a network followed by a distribution head.

Each wraps any ``network`` component (MLP, convolutional, …) and turns its
output into a ``torch.distributions`` object whose ``log_prob`` sums the event
dimensions.  All broadcast over prepended sample dimensions (IWAE's ``k``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.distributions import Bernoulli, ContinuousBernoulli, Distribution, Independent, Normal

from compose_gen import BuildContext, Params, Ref

__all__ = [
    "BernoulliDecoder",
    "ContinuousBernoulliDecoder",
    "GaussianDecoder",
    "GaussianEncoder",
]

MIN_SCALE = 1e-4


def _positive(raw: Tensor) -> Tensor:
    return F.softplus(raw) + MIN_SCALE


class GaussianEncoder(nn.Module):
    """q(z|x) = N(z; μ(x), diag σ²(x)), the amortised posterior of Kingma & Welling (2014).

    The network outputs ``2·latent`` numbers: μ and a raw scale mapped through
    softplus (more stable than exp for large activations).
    """

    def __init__(self, net: nn.Module, latent: int) -> None:
        super().__init__()
        self.net = net
        self.latent = latent

    def forward(self, x: Tensor) -> Distribution:
        loc, raw = self.net(x).split(self.latent, dim=-1)
        return Independent(Normal(loc, _positive(raw)), 1)


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

    def params(self, z: Tensor, parts: int = 1) -> tuple[Tensor, ...]:
        """The network's output split into ``parts`` tensors of shape ``batch + event_shape``."""
        batch = z.shape[: z.dim() - self.latent_rank]
        out = self.net(z).reshape(*batch, parts, *self.event_shape)
        return out.unbind(len(batch))


class BernoulliDecoder(_Decoder):
    """p(x|z) = ∏ Bernoulli(x_i; sigmoid(f(z)_i)) for binary data (Kingma & Welling 2014)."""

    def forward(self, z: Tensor) -> Distribution:
        (logits,) = self.params(z)
        return Independent(Bernoulli(logits=logits, validate_args=False), len(self.event_shape))


class ContinuousBernoulliDecoder(_Decoder):
    """p(x|z) = ∏ CB(x_i; λ_i), the normalised Bernoulli for data in [0, 1] (Loaiza-Ganem & Cunningham 2019)."""

    def forward(self, z: Tensor) -> Distribution:
        (logits,) = self.params(z)
        return Independent(ContinuousBernoulli(logits=logits, validate_args=False), len(self.event_shape))


class GaussianDecoder(_Decoder):
    """p(x|z) = N(x; μ(z), diag σ²), with σ fixed, learned per dimension, or predicted by the network."""

    def __init__(
        self, net: nn.Module, event_shape: tuple[int, ...], latent_rank: int, scale: str, fixed_scale: float
    ) -> None:
        super().__init__(net, event_shape, latent_rank)
        self.scale_mode = scale
        if scale == "learned":
            self.raw_scale = nn.Parameter(torch.full(self.event_shape, math.log(math.expm1(fixed_scale))))
        else:
            self.register_buffer("fixed", torch.tensor(fixed_scale))

    def forward(self, z: Tensor) -> Distribution:
        if self.scale_mode == "predicted":
            loc, raw = self.params(z, parts=2)
            scale = _positive(raw)
        else:
            (loc,) = self.params(z)
            scale = _positive(self.raw_scale) if self.scale_mode == "learned" else self.fixed.expand_as(loc)
        return Independent(Normal(loc, scale.expand_as(loc)), len(self.event_shape))


class EncoderParams(Params):
    net: Ref("network") = Field(..., description="network mapping x to 2·latent numbers")  # type: ignore[valid-type]
    latent: int = Field(..., gt=0)


class DecoderParams(Params):
    net: Ref("network") = Field(..., description="network mapping z to the distribution's parameters")  # type: ignore[valid-type]
    event_shape: list[int] | None = Field(None, description="shape of one x; default: the data's")
    latent_rank: int = Field(1, gt=0, description="event dimensions of z (1: vectors)")


class GaussianDecoderParams(DecoderParams):
    scale: Literal["fixed", "learned", "predicted"] = "learned"
    fixed_scale: float = Field(1.0, gt=0, description="σ when fixed; initial σ when learned")


def _event_shape(p: DecoderParams, ctx: BuildContext) -> tuple[int, ...]:
    if p.event_shape is not None:
        return tuple(p.event_shape)
    if ctx.data is None:
        raise ValueError("event_shape is required when the spec has no data")
    return tuple(ctx.data.train.event_shape("x"))


def build_gaussian_encoder(p: EncoderParams, ctx: BuildContext) -> GaussianEncoder:
    """Diagonal-Gaussian encoder q(z|x) = N(μ(x), diag σ²(x))."""
    return GaussianEncoder(ctx.component(p.net), p.latent)


def build_bernoulli_decoder(p: DecoderParams, ctx: BuildContext) -> BernoulliDecoder:
    """Bernoulli decoder p(x|z) for binary data."""
    return BernoulliDecoder(ctx.component(p.net), _event_shape(p, ctx), p.latent_rank)


def build_continuous_bernoulli_decoder(p: DecoderParams, ctx: BuildContext) -> ContinuousBernoulliDecoder:
    """Continuous-Bernoulli decoder p(x|z) for data in [0, 1]."""
    return ContinuousBernoulliDecoder(ctx.component(p.net), _event_shape(p, ctx), p.latent_rank)


def build_gaussian_decoder(p: GaussianDecoderParams, ctx: BuildContext) -> GaussianDecoder:
    """Diagonal-Gaussian decoder p(x|z) with fixed, learned or predicted scale."""
    return GaussianDecoder(ctx.component(p.net), _event_shape(p, ctx), p.latent_rank, p.scale, p.fixed_scale)
