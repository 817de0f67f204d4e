"""Samplers: how a trained model draws new examples.

* ``ancestral``: z ~ p(z) at temperature T, then x ~ p(x|z) (or its mean);
* ``generator``: z ~ p(z) at temperature T, then x = G(z).
"""

from __future__ import annotations

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
        z = self.prior.sample(n, temperature)
        px = self.decoder(z)
        return px.mean if self.mean else px.sample()


class GeneratorSampler(Sampler):
    """Implicit sampling x = G(z), z ~ p_T(z) (Goodfellow et al. 2014)."""

    def __init__(self, noise: nn.Module, generator: nn.Module) -> None:
        super().__init__()
        self.noise, self.generator = noise, generator

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        return self.generator(self.noise.sample(n, temperature))


class AncestralParams(Params):
    prior: Ref("prior", "flow")  # type: ignore[valid-type]
    decoder: Ref("decoder")  # type: ignore[valid-type]
    mean: bool = Field(True, description="return E[x|z] instead of a draw (clearer images)")


class GeneratorParams(Params):
    noise: Ref("prior")  # type: ignore[valid-type]
    generator: Ref("generator", "network")  # type: ignore[valid-type]


def build_ancestral(p: AncestralParams, ctx: BuildContext) -> AncestralSampler:
    """Prior then decoder: z ~ p(z), x ~ p(x|z)."""
    return AncestralSampler(ctx.component(p.prior), ctx.component(p.decoder), p.mean)


def build_generator(p: GeneratorParams, ctx: BuildContext) -> GeneratorSampler:
    """Noise then generator: x = G(z)."""
    return GeneratorSampler(ctx.component(p.noise), ctx.component(p.generator))


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("ancestral", "sampler", AncestralParams, build_ancestral),
        ComponentType("generator", "sampler", GeneratorParams, build_generator),
    ]
