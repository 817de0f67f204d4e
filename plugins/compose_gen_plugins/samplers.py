"""Samplers: how a trained model draws new examples.

* ``ancestral``: z ~ p(z) at temperature T, then x ~ p(x|z) (or its mean);
* ``generator``: z ~ p(z) at temperature T (optionally truncated), then x = G(z).

With ``classes`` K a sampler draws example i for class i mod K, so a grid of K
columns shows one class per column.  The labels go through the spec's graph to
``condition``, the value the model was conditioned on in training: x ~ p(x|z, c)
with ``condition: c`` for ``c: one_hot(y, 10)``, or x = G(z, y) with the labels
themselves (Mirza & Osindero 2014; Sohn et al. 2015).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from compose_gen import BuildContext, ClassConditions, ComponentType, Ref, Sampler, hookimpl
from compose_gen_plugins.networks import conditioned
from compose_gen_plugins.latent.model import sample_prior
from compose_gen_plugins.sampling import ByClassParams, DecoderMean, check_conditions, means_of_discrete, takes_condition

__all__ = ["AncestralSampler", "GeneratorSampler"]


class AncestralSampler(Sampler):
    """Ancestral sampling of a latent-variable model: z ~ p_T(z), x ~ p(x|z) (Kingma & Welling 2014), or given c.

    Given c, each part that reads it gets it: z ~ p(z|c) from a conditional flow
    prior, x ~ p(x|z, c) from a decoder whose network has ``context_features``.
    """

    def __init__(self, prior: nn.Module, decoder: nn.Module, mean: bool, conditions: ClassConditions | None) -> None:
        super().__init__()
        self.prior, self.decoder, self.mean, self.conditions = prior, decoder, mean, conditions
        self.distortion = means_of_discrete(decoder, mean)
        self.decoder_reads_condition = takes_condition(decoder)

    def sample(self, n: int, temperature: float = 1.0, context: Tensor | None = None) -> Tensor:
        z = sample_prior(self.prior, n, context, temperature)
        px = conditioned(self.decoder, z, context if self.decoder_reads_condition else None)
        return px.mean if self.mean else px.sample()


class GeneratorSampler(Sampler):
    """Implicit sampling x = G(z), z ~ p_T(z) (Goodfellow et al. 2014).

    With ``truncation`` τ, coordinates of z with |z_i| > τ are redrawn (the
    truncation trick of Brock et al. 2019); given a condition c, x = G(z, c)
    (Mirza & Osindero 2014).
    """

    def __init__(
        self, noise: nn.Module, generator: nn.Module, truncation: float | None, conditions: ClassConditions | None
    ) -> None:
        super().__init__()
        self.noise, self.generator = noise, generator
        self.truncation, self.conditions = truncation, conditions
        self.distortion = None if truncation is None else f"truncation {truncation:g} (no truncation draws from the model)"

    def sample(self, n: int, temperature: float = 1.0, context: Tensor | None = None) -> Tensor:
        z = self.noise.sample(n, temperature=temperature)
        if self.truncation is not None:
            for _ in range(100):
                outside = z.abs() > self.truncation * temperature
                if not outside.any():
                    break
                z = torch.where(outside, self.noise.sample(n, temperature=temperature), z)
            z = z.clamp(-self.truncation * temperature, self.truncation * temperature)
        return conditioned(self.generator, z, context)


class AncestralParams(ByClassParams):
    prior: Ref("prior", "flow") = Field(..., description="prior p(z): a prior or a flow")  # type: ignore[valid-type]
    decoder: Ref("decoder") = Field(..., description="decoder p(x|z)")  # type: ignore[valid-type]
    mean: DecoderMean = True


class GeneratorParams(ByClassParams):
    noise: Ref("prior") = Field(..., description="noise prior p(z)")  # type: ignore[valid-type]
    generator: Ref("generator", "network") = Field(  # type: ignore[valid-type]
        ..., description="generator G, called as G(z) or G(z, y)"
    )
    truncation: float | None = Field(None, gt=0, description="redraw noise coordinates beyond ±τ")


def build_ancestral(p: AncestralParams, ctx: BuildContext) -> AncestralSampler:
    """Prior then decoder: z ~ p(z), x ~ p(x|z).

    Ancestral sampling of p(x) = ∫ p(x|z) p(z) dz: z ~ p_T(z), the prior with its σ (a flow prior: its base's) times
    T = the call's temperature (T = 1: p(z) itself), then x ~ p(x|z), or x = E[x|z] with ``mean: true``.
    With ``classes`` K, example i gets the condition c made from the label i mod K: z ~ p(z|c) from a conditional
    flow prior, x ~ p(x|z, c) from a decoder that reads c.

    Bishop 2006, "Pattern Recognition and Machine Learning", §8.1.2 (ancestral sampling); Kingma & Welling 2014,
    "Auto-Encoding Variational Bayes".
    """
    prior, decoder = ctx.component(p.prior), ctx.component(p.decoder)
    features = getattr(decoder, "models_flow_features", None)  # a hybrid VAE-flow's: its draws are y, not x
    if features is not None:
        raise ValueError(
            f"decoder {p.decoder!r} models {features}, not x, so its draws would be given as data; sample the loss's "
            "model, which maps them back through f⁻¹: sample: {type: latent_model, model: LOSS}"
        )
    check_conditions({"prior": prior, "decoder": decoder}, p)
    return AncestralSampler(prior, decoder, p.mean, p.conditions())


def build_generator(p: GeneratorParams, ctx: BuildContext) -> GeneratorSampler:
    """Noise then generator: x = G(z).

    x = G(z), z ~ p_T(z), the noise prior with its σ times T = the call's temperature; given a condition c made
    from the labels (``classes`` K: example i for class i mod K), x = G(z, c).  With ``truncation`` τ, every
    coordinate with |z_j| > τT is drawn again (up to 100 rounds, then clipped to [−τT, τT]).

    Goodfellow et al. 2014, "Generative Adversarial Nets"; conditional: Mirza & Osindero 2014, "Conditional
    Generative Adversarial Nets"; truncation: Brock et al. 2019, "Large Scale GAN Training for High Fidelity Natural
    Image Synthesis".
    """
    generator = ctx.component(p.generator)
    check_conditions({"generator": generator}, p)
    return GeneratorSampler(ctx.component(p.noise), generator, p.truncation, p.conditions())


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("ancestral", "sampler", AncestralParams, build_ancestral),
        ComponentType("generator", "sampler", GeneratorParams, build_generator),
    ]
