"""Samplers: how a trained model draws new examples.

* ``ancestral``: z ~ p(z) at temperature T, then x ~ p(x|z) (or its mean);
* ``generator``: z ~ p(z) at temperature T (optionally truncated), then x = G(z)
  or, for a class-conditional generator, x = G(z, y) with labels cycling 0..K-1.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from compose_gen import BuildContext, ComponentType, Params, Ref, Sampler, hookimpl

__all__ = ["AncestralSampler", "GeneratorSampler"]


class AncestralSampler(Sampler):
    """Ancestral sampling of a latent-variable model: z ~ p_T(z), x ~ p(x|z) (Kingma & Welling 2014)."""

    def __init__(self, prior: nn.Module, decoder: nn.Module, mean: bool) -> None:
        super().__init__()
        self.prior, self.decoder, self.mean = prior, decoder, mean

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        z = self.prior.sample(n, temperature=temperature)
        px = self.decoder(z)
        return px.mean if self.mean else px.sample()


class GeneratorSampler(Sampler):
    """Implicit sampling x = G(z), z ~ p_T(z) (Goodfellow et al. 2014).

    With ``truncation`` τ, coordinates of z with |z_i| > τ are redrawn (the
    truncation trick of Brock et al. 2019); with ``classes`` K, labels
    y = 0, 1, …, K-1, 0, … are passed as G(z, y) (Mirza & Osindero 2014).
    """

    def __init__(self, noise: nn.Module, generator: nn.Module, truncation: float | None, classes: int | None) -> None:
        super().__init__()
        self.noise, self.generator = noise, generator
        self.truncation, self.classes = truncation, classes

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        z = self.noise.sample(n, temperature=temperature)
        if self.truncation is not None:
            for _ in range(100):
                outside = z.abs() > self.truncation * temperature
                if not outside.any():
                    break
                z = torch.where(outside, self.noise.sample(n, temperature=temperature), z)
            z = z.clamp(-self.truncation * temperature, self.truncation * temperature)
        if self.classes is None:
            return self.generator(z)
        labels = torch.arange(n, device=z.device) % self.classes
        return self.generator(z, labels)


class AncestralParams(Params):
    prior: Ref("prior", "flow") = Field(..., description="prior p(z): a prior or a flow")  # type: ignore[valid-type]
    decoder: Ref("decoder") = Field(..., description="decoder p(x|z)")  # type: ignore[valid-type]
    mean: bool = Field(True, description="return E[x|z] instead of a draw (clearer images)")


class GeneratorParams(Params):
    noise: Ref("prior") = Field(..., description="noise prior p(z)")  # type: ignore[valid-type]
    generator: Ref("generator", "network") = Field(  # type: ignore[valid-type]
        ..., description="generator G, called as G(z) or G(z, y)"
    )
    truncation: float | None = Field(None, gt=0, description="redraw noise coordinates beyond ±τ")
    classes: int | None = Field(None, gt=0, description="pass labels 0..classes-1 to a conditional generator")


def build_ancestral(p: AncestralParams, ctx: BuildContext) -> AncestralSampler:
    """Prior then decoder: z ~ p(z), x ~ p(x|z)."""
    return AncestralSampler(ctx.component(p.prior), ctx.component(p.decoder), p.mean)


def build_generator(p: GeneratorParams, ctx: BuildContext) -> GeneratorSampler:
    """Noise then generator: x = G(z)."""
    return GeneratorSampler(ctx.component(p.noise), ctx.component(p.generator), p.truncation, p.classes)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("ancestral", "sampler", AncestralParams, build_ancestral),
        ComponentType("generator", "sampler", GeneratorParams, build_generator),
    ]
