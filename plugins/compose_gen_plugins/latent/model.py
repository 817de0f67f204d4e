r"""What every latent-variable objective shares: the evidence of x, the bound trained, the sampler.

A model draws ``k`` latents :math:`z_i \sim q(z|x)` and reports its
:class:`Evidence`: :math:`\log p(x|z_i)` and the KL term, exact when known in
closed form or else the one-draw estimate :math:`\log q(z_i|x) - \log p(z_i)`.
From it :class:`LatentVariableModel` trains one of

* the ELBO (Kingma & Welling 2014; Rezende et al. 2014)
  :math:`\frac1k\sum_i \log p(x|z_i) - \beta_t\,\mathrm{KL}`, where the KL weight
  :math:`\beta_t = \beta\min(1, t/T)` warms up linearly over the first :math:`T`
  optimizer steps (Bowman et al. 2016; Sønderby et al. 2016) and :math:`\beta \ne 1`
  gives the β-VAE (Higgins et al. 2017);
* the IWAE bound (Burda et al. 2016) :math:`\log \frac1k \sum_i w_i`,
  :math:`w_i = p(x|z_i)p(z_i)/q(z_i|x)`, by a stable log-mean-exp.

The reported ``elbo`` is always the true bound (weight 1).  Models also say how
to encode, decode and sample, for samplers and metrics.

With ``context`` every bound is conditional, :math:`\log p(x|c) \ge
\mathbb{E}_{q(z|x,c)}[\log p(x|z,c)] - \mathrm{KL}(q(z|x,c)\,\|\,p(z|c))`, the
conditional VAE of Sohn et al. (2015): the context reaches every encoder and
decoder, and the prior (and a hybrid model's flow) too when it is a conditional
flow; otherwise :math:`p(z|c) = p(z)`.  ``conditioned`` names the parts that read
c instead, e.g. ``[prior]`` for a class-conditional prior :math:`p(z|c)` under an
unconditional encoder and decoder, :math:`\log p(x|c) \ge \mathbb{E}_{q(z|x)}[\log
p(x|z)] - \mathrm{KL}(q(z|x)\,\|\,p(z|c))`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal, Mapping

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, kl_divergence

from compose_gen import (
    BuildContext,
    Chain,
    ClassConditions,
    ComponentType,
    Loss,
    LossName,
    Params,
    Sampler,
    SpecWarning,
    Value,
    hookimpl,
    importance_sampled_log_likelihood,
    log_mean_exp,
)
from compose_gen.core import check_ladj, constant_features, few_values
from compose_gen.registry import suggest
from compose_gen_plugins.sampling import ClassCount, DecoderMean, means_of_discrete
from compose_gen_plugins.networks import conditioned

__all__ = [
    "Evidence",
    "LatentLevel",
    "LatentVariableModel",
    "ModelSampler",
    "ObjectiveParams",
    "analytic_kl",
    "as_normal",
    "evidence_log_likelihood",
    "build_model_sampler",
    "caution_unbounded",
    "decoded_log_prob",
    "draw",
    "in_data_space",
    "kl_or_estimate",
    "location",
    "prior_given",
    "reads_context",
    "unknown_part",
    "sample_prior",
]


@dataclass
class Evidence:
    """``log_likelihood`` = log p(x|z_i), shape ``(k, *batch)``; ``kl`` broadcasts to it.

    With ``exact_kl`` false, ``kl`` is log q(z_i|x) − log p(z_i) at the same draws,
    so ``log_likelihood − kl`` are the importance log-weights log w_i.
    """

    log_likelihood: Tensor
    kl: Tensor
    exact_kl: bool

    @property
    def log_weights(self) -> Tensor:
        if self.exact_kl:
            raise ValueError("importance weights need the Monte Carlo KL, not the exact one")
        return self.log_likelihood - self.kl


@dataclass
class LatentLevel:
    """One stochastic layer, for diagnostics: its posterior q and prior p (given the layers above)."""

    name: str
    posterior: Distribution
    prior: Distribution


def analytic_kl(q: Distribution, p: Distribution) -> Tensor | None:
    """KL(q ‖ p) in closed form when ``torch.distributions`` knows the pair, else ``None``."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None


def draw(q: Distribution, k: int, with_log_prob: bool) -> tuple[Tensor, Tensor | None]:
    """``k`` reparameterised draws of ``q`` (shape ``(k, *batch, *event)``) and, if asked, their log q.

    A posterior that knows its own samples' density more cheaply than ``log_prob``
    (a flow posterior, whose density direction is slow) offers ``rsample_with_log_prob``.
    """
    if hasattr(q, "rsample_with_log_prob"):
        return q.rsample_with_log_prob((k,))
    z = q.rsample((k,))
    return z, q.log_prob(z) if with_log_prob else None


def decoded_log_prob(px: Distribution, x: Tensor) -> Tensor:
    """log p(x|z) of the decoder's distribution ``px`` (batch ``(*draws, B)``) at ``x`` (``(B, *example)``, or with the
    draws too, ``(*draws, B, *example)``).

    A decoder whose event shape is not an example's is refused: its ``log_prob`` would broadcast x against the
    batch (an event shape ``(1, 64)`` for 64-value examples summed the batch twice over, silently).
    """
    event, batch = px.event_shape, x.dim() - len(px.event_shape)
    if batch < 1 or x.shape[batch:] != event or x.shape[:batch] != px.batch_shape[len(px.batch_shape) - batch :]:
        raise ValueError(
            f"the decoder gives distributions over shape {tuple(event)} (for a batch of {tuple(px.batch_shape)}), but x has shape "
            f"{tuple(x.shape)}: its log_prob would broadcast x against the batch; give the decoder the event_shape of one example"
        )
    return px.log_prob(x)


def as_normal(distribution: Distribution, role: str) -> Normal:
    """The elementwise ``Normal`` of a diagonal Gaussian (``Independent(Normal)`` or ``Normal``); ``TypeError`` otherwise."""
    base = distribution.base_dist if isinstance(distribution, Independent) else distribution
    if not isinstance(base, Normal):
        raise TypeError(f"the {role} must be a diagonal Gaussian, got {type(base).__name__}")
    return base


def location(q: Distribution) -> Tensor:
    """A point summary of a posterior: its mean, or ``location`` for one without a closed-form mean (flows)."""
    return q.location if hasattr(q, "location") else q.mean


def reads_context(module: nn.Module | None) -> bool:
    """Whether a prior, flow or bijector takes a context: a conditional one declares ``context_shape`` (a chain, if a link does)."""
    if isinstance(module, Chain):
        return any(map(reads_context, module.bijectors))
    return getattr(module, "context_shape", None) is not None


def prior_given(prior: nn.Module, context: Tensor | None, temperature: float = 1.0) -> Distribution:
    """p(z|c) from a conditional flow prior (one with a ``context_shape``); else p(z), which ignores c."""
    if context is not None and getattr(prior, "context_shape", None) is not None:
        return prior(context, temperature=temperature)
    return prior(temperature=temperature)


def sample_prior(prior: nn.Module, n: int, context: Tensor | None, temperature: float = 1.0) -> Tensor:
    """``n`` draws of z from p(z), or one per context row from p(z|c) at ``temperature``."""
    p = prior_given(prior, context, temperature)
    if not p.batch_shape:
        return p.sample((n,))
    if p.batch_shape != (n,):
        raise ValueError(f"asked for {n} samples with a context of {p.batch_shape.numel()} rows; give one row per sample")
    return p.sample()


def evidence_log_likelihood(model: Any, inputs: Mapping[str, Any], samples: int, ladj: Tensor | float, chunk: int) -> Tensor:
    """log p(x | c) ≈ log (1/K) Σ_k p(x, z_k | c) / q(z_k | x, c), z_k ~ q, K = ``samples`` (Burda et al. 2016), of any
    ``model`` with :meth:`LatentVariableModel.evidence`, subclass or not.

    An estimate whose expectation is a lower bound that tightens as K grows; draws come ``chunk``
    at a time.  A density adds ``ladj``, a probability mass (``model.discrete``) does not.
    """
    x, context = inputs["x"], inputs.get("context")
    log_p = importance_sampled_log_likelihood(lambda n: model.evidence(x, n, exact_kl=False, context=context).log_weights, samples, chunk)
    return log_p if getattr(model, "discrete", False) else log_p + ladj


def kl_or_estimate(q: Distribution, p: Distribution, z: Tensor, log_q: Tensor | None, exact: bool) -> tuple[Tensor, bool]:
    """The exact KL(q ‖ p) when asked for and known, else log q(z) − log p(z); and whether it is exact."""
    if q.event_shape != p.event_shape:
        raise ValueError(
            f"the posterior q(z|x) gives z of shape {tuple(q.event_shape)}, but the prior p(z) has shape {tuple(p.event_shape)}: "
            "make the encoder's latent size and the prior's shape agree"
        )
    if exact:
        kl = analytic_kl(q, p)
        if kl is not None:
            return kl, True
    return (q.log_prob(z) if log_q is None else log_q) - p.log_prob(z), False


def caution_unbounded(x_value: str, decoder: nn.Module, ctx: BuildContext, transform: nn.Module | None = None) -> None:
    """Warn when a Gaussian decoder's learned or predicted σ meets constant features, or data that take a few values,
    or a continuous Bernoulli decoder meets a few values among which 0 or 1.

    There σ can shrink toward 0, so the ELBO grows without bound and says nothing of
    the model, and bits/dim bound nothing of the discrete data's (Theis et al. 2016);
    a dequantizing ``transform`` (the hybrid's) fills each bin with noise.  ``x_value``
    is the loss's ``x:``, looked at where it is a field of the data.
    """
    scale = getattr(decoder, "scale_mode", "fixed")
    atoms = getattr(decoder, "unbounded_at_0_and_1", False)  # the continuous Bernoulli
    if (scale == "fixed" and not atoms) or ctx.data is None or x_value not in ctx.data.train.fields:
        return
    if transform is not None and getattr(transform, "draws_noise", False):
        return
    x = ctx.data.train.fields[x_value]
    discrete = few_values(x)
    if atoms:
        discrete = discrete if bool(((x == 0) | (x == 1)).any()) else None
    caveat = discrete or (None if atoms else constant_features(x))
    if not caveat:
        return
    if not discrete:
        advice = "drop them (a csv's `columns:`)"
    elif set(torch.unique(x[:2000]).tolist()) <= {0.0, 1.0}:  # the rows few_values looked at
        advice = "the data are binary: use bernoulli_decoder"
    else:
        advice = (
            "dequantize them (the dataset's `transforms: [{type: dequantize, levels: L}]` on the integers 0..L-1, before "
            "scaling them), or use a discrete decoder (categorical_decoder, discretized_logistic_decoder)"
        )
    if atoms:
        message = f"{caveat}: the continuous Bernoulli's density at 0 and 1 grows without bound as λ nears them, so the loss falls forever; {advice}"
    else:
        message = f"{caveat}: the decoder's {scale} σ there can shrink toward 0, so the loss falls without bound; {advice}, or give the decoder `scale: fixed`"
    warnings.warn(SpecWarning(message), stacklevel=2)


class LatentVariableModel(Loss):
    """Base of the ELBO-family losses; subclasses implement :meth:`evidence` and the generative side.

    A subclass trains the bound its ``objective`` names (ELBO with β and warm-up, or IWAE) from :meth:`evidence`
    alone, and gets conditioning, the importance-sampled likelihood and the latent metrics.  A loss with another
    objective (a β-TCVAE's, say) overrides ``forward`` and keeps :meth:`evidence`, which is what the latent metrics
    call: they accept any loss with that method, subclass or not.
    """

    terms = ("loss",)

    #: Parts that take a context only when conditional (priors and flows); every other part reads a model's context by default.
    optional_context: ClassVar[frozenset[str]] = frozenset({"prior", "bijectors"})
    #: Parts of q, not of the generative model: a context only they read does not change the samples.
    inference_parts: ClassVar[frozenset[str]] = frozenset({"encoder"})

    def __init__(self, objective: "ObjectiveParams", parts: Mapping[str, nn.Module | None]) -> None:
        super().__init__()
        #: The graph value this model is conditioned on, for metrics and the sampler to compute; None: unconditional.
        self.context_value = objective.context
        #: The graph value of the examples x, for metrics to compute.
        self.x_value = objective.x
        #: The parts (named as the loss's fields) that read the context.
        self.conditioned = self._conditioned_parts(objective, {name: m for name, m in parts.items() if m is not None})
        self.objective = objective.objective
        self.samples = objective.samples
        if self.objective == "iwae" and self.samples == 1:  # the default of elbo, hybrid_vae_flow and hierarchical_vae
            warnings.warn(
                SpecWarning("objective: iwae with samples: 1 trains the ELBO itself (IWAE_1, with a Monte Carlo KL): set samples: k, e.g. 5"),
                stacklevel=2,
            )
        self.kl_mode = objective.kl
        self.beta = objective.beta
        self.warmup_steps = objective.warmup_steps
        if self.warmup_steps:
            # A buffer, so a resumed run continues the schedule where it stopped.
            self.register_buffer("optimizer_steps", torch.zeros((), dtype=torch.long))

    def _conditioned_parts(self, objective: "ObjectiveParams", parts: Mapping[str, nn.Module]) -> frozenset[str]:
        if objective.context is None:
            return frozenset()
        if objective.conditioned is None:
            return frozenset(name for name, m in parts.items() if name not in self.optional_context or reads_context(m))
        listed = set(objective.conditioned)
        unknown = unknown_part(objective.conditioned, tuple(parts))
        if unknown:
            raise ValueError(unknown)
        for name, module in parts.items():
            if name not in self.optional_context:
                continue
            if name in listed and not reads_context(module):
                raise ValueError(f"conditioned lists {name!r}, which takes no context (conditional priors and bijectors declare context_shape)")
            if name not in listed and reads_context(module):
                raise ValueError(f"{name!r} is conditional (it takes a context), so list it in conditioned")
        return frozenset(listed)

    def given(self, part: str, context: Tensor | None) -> Tensor | None:
        """``context`` for a part that reads it, else None."""
        return context if part in self.conditioned else None

    def call_part(self, part: str, inputs: Tensor, context: Tensor | None) -> Any:
        """The network ``part`` (an attribute of that name) applied to ``inputs``, and to the context if it reads it."""
        return conditioned(getattr(self, part), inputs, self.given(part, context))

    # -- what a model provides -------------------------------------------------
    # Each takes the context c of a conditional model (one row per example of x, or per sample); None otherwise.
    def evidence(self, x: Tensor, k: int, exact_kl: bool, context: Tensor | None = None) -> Evidence:
        """``k`` reparameterised draws z_i ~ q(z|x, c) per example: log p(x|z_i, c) of shape ``(k, *batch)``, and the
        KL, in closed form where ``exact_kl`` asks and one is known (``Evidence.exact_kl`` says which), else
        log q(z_i|x, c) − log p(z_i|c) at the same draws, so that their difference is the importance log-weights."""
        raise NotImplementedError

    def sample(self, n: int, temperature: float = 1.0, mean: bool = True, context: Tensor | None = None) -> Tensor:
        """``n`` draws of x (or the decoder's means) with latents drawn at ``temperature``."""
        raise NotImplementedError

    def encode(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """x's latent code at the posterior mean(s), the point ``decode`` maps back (interpolation paths run
        between codes, so a code must hold every level the decoder depends on)."""
        raise NotImplementedError

    def decode(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """The decoder's mean of x given a code as :meth:`encode` makes it."""
        raise NotImplementedError

    def reconstruct(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """x decoded from the posterior mean(s)."""
        return self.decode(self.encode(x, context), context)

    def levels(self, x: Tensor, context: Tensor | None = None) -> list[LatentLevel]:
        """Posterior and prior of each stochastic layer (top first), for collapse diagnostics."""
        raise NotImplementedError

    #: Whether log p(x|z) is a probability mass (no change of variables in data space).
    discrete = False
    #: The constant log|det ∂x/∂u| of the dataset's preprocessing u -> x, which a density's bounds add (:func:`in_data_space`).
    ladj_to_model = 0.0

    likelihood_inputs = ("x", "context")

    def log_likelihood(self, inputs: Mapping[str, Any], samples: int, ladj: Tensor, chunk: int = 250) -> Tensor:
        """:func:`evidence_log_likelihood` of this model."""
        return evidence_log_likelihood(self, inputs, samples, ladj, chunk)

    # -- the objective ---------------------------------------------------------
    def kl_weight(self) -> Tensor | float:
        if not self.warmup_steps:
            return self.beta
        return self.beta * (self.optimizer_steps.float() / self.warmup_steps).clamp(max=1.0)

    def after_step(self, terms: frozenset[str]) -> None:
        if self.warmup_steps:
            self.optimizer_steps += 1

    def forward(self, inputs: Mapping[str, Any], terms: frozenset[str]) -> dict[str, Tensor]:
        exact = self.objective == "elbo" and self.kl_mode != "mc"
        evidence = self.evidence(inputs["x"], self.samples, exact, inputs.get("context"))
        if self.kl_mode == "analytic" and not evidence.exact_kl:
            raise ValueError(f"{type(self).__name__}: kl: analytic, but the KL of this posterior and prior has no closed form")
        if not self.discrete:  # in data space, as importance_sampled_nll and flow_nll count: + log|det ∂x/∂u|
            evidence = replace(evidence, log_likelihood=evidence.log_likelihood + (self.ladj_to_model + inputs.get("ladj", 0.0)))
        # Means over draws and examples; the KL broadcasts to the draws, so its own mean is the same average.
        reconstruction = evidence.log_likelihood.mean()
        kl = evidence.kl.mean()
        elbo = reconstruction - kl
        logs = {"elbo": elbo.detach(), "kl": kl.detach(), "reconstruction": reconstruction.detach()}
        if self.objective == "iwae":
            bound = log_mean_exp(evidence.log_weights, 0).mean()
            return {"loss": -bound, "iwae": bound.detach(), **logs}
        weight = self.kl_weight()
        if self.warmup_steps:
            logs["kl_weight"] = weight
        loss = -elbo if not self.warmup_steps and weight == 1.0 else -(reconstruction - weight * kl)
        return {"loss": loss, **logs}


def in_data_space(model: LatentVariableModel, p: "ObjectiveParams", ctx: BuildContext) -> LatentVariableModel:
    """``model``, its bounds counted in data space: a density's log p(x|z) gains the log-determinant of the dataset's
    preprocessing, its constant ``ladj_to_model`` and, through ``ladj:``, the per-example part of its transforms (as
    ``flow_nll`` and ``importance_sampled_nll`` count), so test bounds and importance-sampled NLLs compare.  A
    probability mass (a discrete decoder) has none to add, nor has x that is a graph value."""
    data = ctx.data
    if data is None:
        return model
    check_ladj(p.x, p.ladj, data.train.fields, needed=not model.discrete)
    if not model.discrete and p.x in data.train.fields:
        model.ladj_to_model = data.train.ladj_to_model
    return model


def unknown_part(listed: list[str], parts: tuple[str, ...]) -> str | None:
    """What is wrong with a ``conditioned`` list naming a part the model lacks, or None."""
    for name in listed:
        if name not in parts:
            return f"conditioned names {name!r}{suggest(name, parts)} (this model's parts are {', '.join(parts)})"
    return None


class ObjectiveParams(Params):
    """The bound a latent-variable model trains."""

    #: The model's parts as its fields name them, which ``conditioned`` may list (a subclass's; empty: checked at build).
    parts: ClassVar[tuple[str, ...]] = ()

    x: Value = Field("x", description="graph value with the examples x")
    ladj: Value | None = Field(
        None, description="batch field with the per-example log-det of the dataset's transforms (ladj_x), for bounds in data space"
    )
    context: Value | None = Field(
        None, description="graph value with a condition c, e.g. c: one_hot(y, 10), for q(z|x, c) and p(x|z, c); None: unconditional"
    )
    conditioned: list[str] | None = Field(
        None,
        min_length=1,
        description="the parts that read the context, e.g. [prior] for p(z|c) under an unconditional encoder and decoder; "
        "default: every encoder and decoder, and the prior and bijectors when conditional",
    )
    objective: Literal["elbo", "iwae"] = Field("elbo", description="ELBO, or the k-sample IWAE bound")
    samples: int = Field(1, gt=0, description="draws of z per example (IWAE's k)")
    kl: Literal["auto", "analytic", "mc"] = Field("auto", description="ELBO's KL: closed form when known, or Monte Carlo")
    beta: float = Field(1.0, ge=0.0, description="final weight of the KL in the ELBO loss (β-VAE); not with the iwae objective")
    warmup_steps: int = Field(0, ge=0, description="optimizer steps over which the KL weight ramps from 0 to beta (each player training the loss steps it: two players, or a player's steps: 2, ramp twice as many a round); not with the iwae objective")

    @field_validator("conditioned")
    @classmethod
    def _known_parts(cls, value: list[str] | None) -> list[str] | None:
        unknown = unknown_part(value, cls.parts) if value is not None and cls.parts else None
        if unknown:
            raise ValueError(unknown)
        return value

    @model_validator(mode="after")
    def _conditioned_needs_context(self) -> "ObjectiveParams":
        if self.conditioned is not None:
            if self.context is None:
                raise ValueError("conditioned names the parts that read the context; set context too")
            if len(set(self.conditioned)) < len(self.conditioned):
                raise ValueError(f"conditioned lists a part twice: {self.conditioned}")
        return self

    @model_validator(mode="after")
    def _weights_only_for_elbo(self) -> "ObjectiveParams":
        if self.objective == "iwae" and (self.beta != 1.0 or self.warmup_steps):
            raise ValueError("beta and warmup_steps weight the ELBO's KL; the iwae objective has no separate KL term")
        if self.objective == "iwae" and self.kl == "analytic":
            raise ValueError(
                "kl: analytic computes the ELBO's KL in closed form; the iwae objective has no KL term, its weights "
                "log p(x, z) − log q(z|x) need each draw's log-densities: leave kl at auto"
            )
        return self


class ModelSampler(Sampler):
    """Samples from the generative side of a latent-variable loss: z ~ p_T(z|c), then x ~ p(x|z, c) (or its mean)."""

    def __init__(self, model: LatentVariableModel, mean: bool, conditions: ClassConditions | None = None) -> None:
        super().__init__()
        self.model, self.mean, self.conditions = model, mean, conditions
        self.distortion = means_of_discrete(getattr(model, "decoder", None), mean)

    def sample(self, n: int, temperature: float = 1.0, context: Tensor | None = None) -> Tensor:
        if context is None:  # an unconditional model's sample may take no context (VQ-VAE's)
            return self.model.sample(n, temperature, self.mean)
        return self.model.sample(n, temperature, self.mean, context)


class ModelSamplerParams(Params):
    model: LossName = Field(..., description="name of the latent-variable loss under `losses:`")
    mean: DecoderMean = True
    #: The condition is the one the model was trained on, made from the labels.
    classes: ClassCount = None


def build_model_sampler(p: ModelSamplerParams, ctx: BuildContext) -> ModelSampler:
    """Ancestral sampling through a latent-variable loss's own generative model."""
    model = ctx.loss(p.model)
    if not hasattr(model, "sample"):
        raise ValueError(f"loss {p.model!r} ({type(model).__name__}) is not a generative latent-variable model")
    value = getattr(model, "context_value", None)
    if value is not None and p.classes is None:
        raise ValueError(f"loss {p.model!r} is conditioned on {value!r}: set classes to sample by class")
    if value is None and p.classes is not None:
        raise ValueError(f"loss {p.model!r} is not conditional (it has no context), so it cannot be sampled by class")
    if isinstance(model, LatentVariableModel) and value is not None and not model.conditioned - model.inference_parts:
        raise ValueError(
            f"loss {p.model!r} reads its context only in {', '.join(sorted(model.conditioned))} (its q), so its samples do not depend "
            "on the class: condition the decoder or the prior to sample by class"
        )
    return ModelSampler(model, p.mean, None if value is None else ClassConditions(value, p.classes))


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [ComponentType("latent_model", "sampler", ModelSamplerParams, build_model_sampler)]
