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

from compose_gen_plugins.latent import autoencoder, elbo, evaluation, flow_posterior, grids, hierarchical, hybrid, iwae
from compose_gen_plugins.latent import conditionals as c
from compose_gen_plugins.latent import model, priors, vqvae


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        # encoders and decoders
        ComponentType("gaussian_encoder", "encoder", c.EncoderParams, c.build_gaussian_encoder),
        ComponentType("flow_encoder", "encoder", flow_posterior.FlowEncoderParams, flow_posterior.build_flow_encoder),
        ComponentType("bernoulli_decoder", "decoder", c.DecoderParams, c.build_bernoulli_decoder),
        ComponentType("continuous_bernoulli_decoder", "decoder", c.DecoderParams, c.build_continuous_bernoulli_decoder),
        ComponentType("gaussian_decoder", "decoder", c.GaussianDecoderParams, c.build_gaussian_decoder),
        ComponentType("categorical_decoder", "decoder", c.CategoricalDecoderParams, c.build_categorical_decoder),
        ComponentType(
            "discretized_logistic_decoder",
            "decoder",
            c.DiscretizedLogisticDecoderParams,
            c.build_discretized_logistic_decoder,
        ),
        # priors and posterior flows
        ComponentType("gaussian_mixture", "prior", priors.GaussianMixtureParams, priors.build_gaussian_mixture),
        ComponentType(
            "amortized_planar", "bijector", flow_posterior.AmortizedPlanarParams, flow_posterior.build_amortized_planar
        ),
        # objectives
        ComponentType("elbo", "loss", elbo.VAEParams, elbo.build_elbo),
        ComponentType("iwae", "loss", iwae.IWAEParams, iwae.build_iwae),
        ComponentType("hybrid_vae_flow", "loss", hybrid.HybridParams, hybrid.build_hybrid_vae_flow),
        ComponentType("hierarchical_vae", "loss", hierarchical.HierarchicalParams, hierarchical.build_hierarchical_vae),
        ComponentType("autoencoder", "loss", autoencoder.AutoencoderParams, autoencoder.build_autoencoder),
        ComponentType("vqvae", "loss", vqvae.VQVAEParams, vqvae.build_vqvae),
        # sampling and metrics
        ComponentType("latent_model", "sampler", model.ModelSamplerParams, model.build_model_sampler),
        ComponentType(
            "importance_sampled_nll",
            "metric",
            evaluation.ImportanceSampledNLLParams,
            evaluation.build_importance_sampled_nll,
        ),
        ComponentType(
            "posterior_collapse", "metric", evaluation.PosteriorCollapseParams, evaluation.build_posterior_collapse
        ),
        ComponentType("codebook_usage", "metric", vqvae.CodebookUsageParams, vqvae.build_codebook_usage),
        ComponentType("reconstruction_grid", "metric", grids.ReconstructionGridParams, grids.build_reconstruction_grid),
        ComponentType("sample_grid", "metric", grids.SampleGridParams, grids.build_sample_grid),
        ComponentType("interpolation_grid", "metric", grids.InterpolationGridParams, grids.build_interpolation_grid),
    ]
