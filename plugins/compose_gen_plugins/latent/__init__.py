"""Latent-variable models: encoders, decoders and their objectives."""

from __future__ import annotations

from compose_gen import ComponentType, hookimpl

from compose_gen_plugins.latent import conditionals as c
from compose_gen_plugins.latent import elbo


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("gaussian_encoder", "encoder", c.EncoderParams, c.build_gaussian_encoder),
        ComponentType("bernoulli_decoder", "decoder", c.DecoderParams, c.build_bernoulli_decoder),
        ComponentType("continuous_bernoulli_decoder", "decoder", c.DecoderParams, c.build_continuous_bernoulli_decoder),
        ComponentType("gaussian_decoder", "decoder", c.GaussianDecoderParams, c.build_gaussian_decoder),
        ComponentType("elbo", "loss", elbo.ELBOParams, elbo.build_elbo),
    ]
