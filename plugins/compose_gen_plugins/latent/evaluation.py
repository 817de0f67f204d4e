r"""Metrics of latent-variable models: test log-likelihood and posterior-collapse diagnostics.

* ``importance_sampled_nll`` — the test NLL estimated by the IWAE bound with
  ``samples`` draws (Burda et al. 2016, §5: k = 5000), in memory-bounded chunks of
  draws, in nats and bits per dimension.  For a continuous likelihood the
  data-space density adds the preprocessing's log-determinant:
  :math:`\log p_\text{data}(x) = \log p(x') + \log|\det J_\text{pre}|`; a discrete
  one (Bernoulli, categorical, discretized logistic) is already a probability.
* ``posterior_collapse`` — per stochastic layer, the average
  :math:`\mathrm{KL}(q(z_d|x)\,\|\,p(z_d))` of each latent dimension (diagonal
  Gaussian posterior and prior) and the number of active units
  :math:`A = \#\{d : \mathrm{Cov}_x(\mathbb{E}_{q(z|x)}[z_d]) > 0.01\}` (Burda et al.
  2016, §5.2); collapsed dimensions have KL ≈ 0 and are inactive.  A layer whose
  prior or posterior is no diagonal Gaussian (a flow, a mixture) reports its
  total KL alone, ``kl_mc``: :math:`\frac1S\sum_s \log q(z_s|x) - \log p(z_s)`
  over ``kl_samples`` draws :math:`z_s \sim q`.  For a
  conditional model the variance is that of the means' residuals after a least-squares
  fit on the condition (for one-hot classes, the pooled within-class variance), so a
  unit that moves with c alone, carrying nothing about x, is not counted active.

For a conditional model (one with a ``context``) each test batch's condition is
its graph value, computed from the batch as in training, so the NLL is
:math:`-\log p(x|c)`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.distributions import kl_divergence

from compose_gen import BuildContext, ComponentType, EvalContext, LossName, Params, SpecWarning, hookimpl
from compose_gen.core import MAX_DRAWS, batches, bits_per_dim, ladj_field, not_in_data_space
from compose_gen_plugins.latent.model import LatentLevel, LatentVariableModel, as_normal, draw, evidence_log_likelihood, location

__all__ = ["ImportanceSampledNLL", "PosteriorCollapse", "batch_context", "batch_examples", "latent_model", "unexplained_variance"]


def latent_model(ctx: BuildContext, name: str, needs: str = "evidence") -> LatentVariableModel:
    """The loss ``name`` if it offers the method ``needs``; a clear error otherwise."""
    model = ctx.loss(name)
    if not callable(getattr(model, needs, None)):
        losses = "elbo, iwae, hybrid_vae_flow or hierarchical_vae" + (", autoencoder or vqvae" if needs in ("reconstruct", "decode") else "")
        flow = (
            "; a flow_nll's test_losses give its NLL, exact, or for a flow that dequantizes the one-draw bound that "
            "run.log_prob(x, samples=k) tightens"
        ) if needs == "evidence" and hasattr(model, "flow") else ""
        raise ValueError(
            f"loss {name!r} ({type(model).__name__}) is not a latent-variable model: name a loss of type {losses}{flow} "
            f"(a plugin's loss qualifies by its method {needs}(), as compose_gen_plugins.latent.model.LatentVariableModel defines it)"
        )
    return model


def batch_examples(ectx: EvalContext, model: Any, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor | float | None]:
    """The examples x that ``model`` models in ``batch`` (its loss's ``x:``, ``x`` for a loss that does not say), and
    their log-determinant from data space to model space; None where x is a graph value rather than a field of the
    data, which no log-determinant of the data's describes."""
    value = getattr(model, "x_value", "x")
    if value not in batch:
        return ectx.model.values(batch, [value])[value], None
    x = batch[value]
    if x.is_floating_point():  # in the model's precision, as its losses read it (a model made float64 by .double())
        x = x.to(_precision(model, x.dtype))
    return x, ectx.test.ladj_to_model + batch.get(ladj_field(value), 0.0)


def _precision(model: Any, default: torch.dtype) -> torch.dtype:
    """The dtype of ``model``'s floating parameters; ``default`` for a model without any."""
    parameters = model.parameters() if isinstance(model, nn.Module) else ()
    return next((p.dtype for p in parameters if p.is_floating_point()), default)


def batch_context(ectx: EvalContext, model: Any, batch: dict[str, Tensor]) -> Tensor | None:
    """The condition c of ``batch`` for a conditional model: its graph value, computed as in training; else None."""
    value = getattr(model, "context_value", None)
    return None if value is None else ectx.model.values(batch, [value])[value]


class ImportanceSampledNLL:
    """−log p(x) averaged over the test split, by importance sampling with ``samples`` draws per example."""

    def __init__(self, name: str, model: LatentVariableModel, samples: int, chunk: int, batch_size: int) -> None:
        self.name, self.model, self.samples, self.chunk, self.batch_size = name, model, samples, chunk, batch_size

    @torch.no_grad()
    def __call__(self, ectx: EvalContext) -> dict[str, float]:
        torch.manual_seed(ectx.seed)
        test = ectx.test
        total, count = 0.0, 0
        for batch in batches(test, self.batch_size, ectx.device):
            x, ladj = batch_examples(ectx, self.model, batch)
            inputs = {"x": x, "context": batch_context(ectx, self.model, batch)}
            ladj = 0.0 if ladj is None else ladj
            if isinstance(self.model, LatentVariableModel):  # its own estimate, which run.log_prob reads too
                log_p = self.model.log_likelihood(inputs, self.samples, ladj, self.chunk)
            else:
                log_p = evidence_log_likelihood(self.model, inputs, self.samples, ladj, self.chunk)
            total += float(log_p.double().sum())
            count += len(x)
        nll = -total / count
        key = f"test/{self.name}"
        return {f"{key}.nll_k{self.samples}": nll, f"{key}.bpd_k{self.samples}": bits_per_dim(nll, x[0].numel())}


class ImportanceSampledNLLParams(Params):
    model: LossName = Field(..., description="name of the latent-variable loss")
    samples: int = Field(1000, gt=0, le=MAX_DRAWS, description="importance samples per example (Burda et al. use 5000)")
    chunk: int = Field(250, gt=0, le=MAX_DRAWS, description="draws per pass: memory grows with chunk × batch_size")
    batch_size: int = Field(32, gt=0, description="test examples per pass")


def build_importance_sampled_nll(p: ImportanceSampledNLLParams, ctx: BuildContext) -> ImportanceSampledNLL:
    """Test NLL (nats, bits/dim) by the k-sample importance-weighted bound, computed in chunks.

    −log p(x) ≈ −log (1/k) Σᵢ p(x, zᵢ) / q(zᵢ|x), zᵢ ~ q(z|x), k = samples: a bound whose expectation tightens toward
    −log p(x) as k grows; bits/dim = NLL / (D log 2).

    Burda et al. 2016, "Importance Weighted Autoencoders".
    """
    model = latent_model(ctx, p.model)
    value = getattr(model, "x_value", "x")
    if ctx.data is not None and value not in ctx.data.test.fields:
        warnings.warn(SpecWarning(f"loss {p.model!r}: {not_in_data_space(value)}"), stacklevel=2)
    return ImportanceSampledNLL(p.model, model, p.samples, p.chunk, p.batch_size)


class PosteriorCollapse:
    """Per-dimension KL and active units of every stochastic layer over the test split.

    Each layer as the model's ``levels`` gives it: for the two-level HVAE, z₁'s KL is taken
    under the posterior mean of z₂ (one value per example), not averaged over draws of z₂.
    A unit is active when its posterior mean, less its prior's where the prior is one per
    example (p(z₁|z₂)), varies over the test set beyond what the condition explains.  A flow
    posterior, which has no closed-form mean, stands in its ``location`` T(μ₀) for it.
    """

    def __init__(self, name: str, model: LatentVariableModel, threshold: float, kl_samples: int = 16) -> None:
        self.name, self.model, self.threshold, self.kl_samples = name, model, threshold, kl_samples

    @torch.no_grad()
    def __call__(self, ectx: EvalContext) -> dict[str, float]:
        torch.manual_seed(ectx.seed)
        kl_sums: dict[str, torch.Tensor] = {}
        kl_estimates: dict[str, float] = {}
        unfactorised: set[str] = set()
        means: dict[str, list[torch.Tensor]] = {}
        conditions: list[torch.Tensor] = []
        count = 0
        for batch in batches(ectx.test, ectx.batch_size, ectx.device):
            x, _ = batch_examples(ectx, self.model, batch)
            context = batch_context(ectx, self.model, batch)
            if context is not None:
                conditions.append(context.reshape(len(x), -1))
            for level in self.model.levels(x, context=context):
                means.setdefault(level.name, []).append(_relative_location(level))
                if level.name not in unfactorised:
                    try:
                        per_dim = kl_divergence(as_normal(level.posterior, "posterior"), as_normal(level.prior, "prior"))
                        kl_sums[level.name] = kl_sums.get(level.name, 0) + per_dim.sum(0)
                        continue
                    except TypeError:  # a mixture or flow: no KL per dimension
                        unfactorised.add(level.name)
                z, log_q = draw(level.posterior, self.kl_samples, with_log_prob=True)
                estimate = (log_q - level.prior.log_prob(z)).mean(0)
                kl_estimates[level.name] = kl_estimates.get(level.name, 0.0) + float(estimate.double().sum())
            count += len(x)
        results: dict[str, float] = {}
        for name, values in means.items():
            key = f"test/{self.name}.{name}"
            try:
                variance = unexplained_variance(torch.cat(values), torch.cat(conditions) if conditions else None)
            except ValueError as error:
                warnings.warn(f"{key}.active_units is NaN: {error}", stacklevel=2)
                variance = torch.tensor(math.nan)
            results[f"{key}.active_units"] = math.nan if variance.isnan().any() else float((variance > self.threshold).sum())
            if name in unfactorised:
                results[f"{key}.kl_mc"] = kl_estimates[name] / count
            else:
                kl = kl_sums[name] / count
                results[f"{key}.kl"] = float(kl.sum())
                results.update({f"{key}.kl_dim{d:02d}": float(v) for d, v in enumerate(kl.flatten())})  # (C, H, W) latents too
        return results


def _relative_location(level: LatentLevel) -> Tensor:
    """The posterior's location, less the prior's where the prior is one per example (p(z₁|z₂) of a hierarchy, a
    conditional p(z|c)): a unit that moves with x only as its prior does (z₁ through z₂) tells nothing more of x.  A
    prior with no mean (a conditional flow's) is left to the regression on the condition."""
    posterior = location(level.posterior)
    if not level.prior.batch_shape:
        return posterior
    try:
        return posterior - location(level.prior)
    except NotImplementedError:
        return posterior


def unexplained_variance(values: Tensor, condition: Tensor | None) -> Tensor:
    """Per column of ``values`` (n, d): the variance left after a least-squares fit on ``[1, condition]``.

    ``‖r‖² / (n − rank)`` with ``r`` the residuals: the sample variance without a
    condition, the pooled within-class variance for one-hot classes.  Undefined, and
    refused with a ``ValueError``, when ``n`` is not above the rank.
    """
    values = values.flatten(1).double()
    design = torch.ones(len(values), 1, dtype=values.dtype, device=values.device)
    if condition is not None:
        design = torch.cat([design, condition.to(design)], dim=1)
    coefficients = torch.linalg.lstsq(design.cpu(), values.cpu()).solution.to(values.device)
    residual = values - design @ coefficients
    rank = int(torch.linalg.matrix_rank(design))
    if len(values) <= rank:
        fit = "their mean" if rank == 1 else f"a fit on [1, condition] of rank {rank}"
        raise ValueError(f"the variance of {len(values)} value(s) about {fit} is undefined; it needs at least {rank + 1} test examples")
    return residual.square().sum(0) / (len(values) - rank)


class PosteriorCollapseParams(Params):
    model: LossName = Field(..., description="name of the latent-variable loss")
    threshold: float = Field(0.01, gt=0.0, description="a unit is active when Cov_x(E_q[z_d]) exceeds this (less the mean of a prior that is one per example, p(z₁|z₂))")
    kl_samples: int = Field(16, gt=0, le=MAX_DRAWS, description="draws per example of the KL estimate of a layer with a flow or mixture")


def build_posterior_collapse(p: PosteriorCollapseParams, ctx: BuildContext) -> PosteriorCollapse:
    """Posterior-collapse diagnostics: KL per latent dimension and active units (Burda et al. 2016).

    Per stochastic layer, over the test split: KL_d = E_x KL(q(z_d|x) ‖ p(z_d)) for a diagonal-Gaussian posterior and
    prior (``kl_dimNN``, their sum ``kl``), else only the total ``kl_mc`` = E_x (1/S) Σ_s [log q(z_s|x) − log p(z_s)],
    z_s ~ q(z|x), S = kl_samples; active units A = #{d : Cov_x(E_q[z_d]) > threshold}, the variance taken about a
    least-squares fit on [1, c] for a conditional model.  A collapsed dimension has KL_d ≈ 0 and is inactive.

    Burda et al. 2016, "Importance Weighted Autoencoders", §5.2.
    """
    return PosteriorCollapse(p.model, latent_model(ctx, p.model, "levels"), p.threshold, p.kl_samples)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("importance_sampled_nll", "metric", ImportanceSampledNLLParams, build_importance_sampled_nll),
        ComponentType("posterior_collapse", "metric", PosteriorCollapseParams, build_posterior_collapse),
    ]
