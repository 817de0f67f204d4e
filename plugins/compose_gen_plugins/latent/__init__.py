"""Latent-variable models: encoders, decoders, priors, the ELBO family, VQ-VAE and their metrics.

Modules: :mod:`.conditionals` (encoders and decoders), :mod:`.discretized`
(categorical and discretized logistic likelihoods), :mod:`.priors`,
:mod:`.model` (the bounds every model trains, and the sampler),
:mod:`.elbo` (VAE), :mod:`.iwae`, :mod:`.flow_posterior`, :mod:`.hybrid`,
:mod:`.hierarchical`, :mod:`.autoencoder`, :mod:`.vqvae`, :mod:`.evaluation`
and :mod:`.grids` (metrics).
"""

from __future__ import annotations

from compose_gen import ComponentType, hookimpl
from compose_gen_plugins import package_types


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    """Every type of every latent submodule, each listed by the module that defines it."""
    return package_types(__name__)
