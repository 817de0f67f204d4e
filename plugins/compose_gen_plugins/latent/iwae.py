r"""The importance-weighted bound (Burda et al. 2016, "Importance Weighted Autoencoders").

.. math:: \mathcal{L}_k(x) = \mathbb{E}_{z_{1..k} \sim q}\Big[\log \frac1k \sum_{i=1}^k
          \frac{p(x, z_i)}{q(z_i|x)}\Big], \qquad
          \mathrm{ELBO} = \mathcal{L}_1 \le \mathcal{L}_k \le \mathcal{L}_{k+1} \le \log p(x),

and :math:`\mathcal{L}_k \to \log p(x)` as :math:`k \to \infty`.  Trained as the
``iwae`` loss (a VAE with ``objective: iwae``); with large ``k`` it is also the
standard estimate of the test log-likelihood, computed here in chunks of draws
with a running log-sum-exp so memory stays bounded whatever ``k``.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

from pydantic import Field
from torch import Tensor

from compose_gen import BuildContext
from compose_gen_plugins.latent.elbo import VAE, VAEParams

__all__ = ["IWAEParams", "build_iwae", "importance_sampled_log_likelihood"]


def importance_sampled_log_likelihood(log_weights: Callable[[int], Tensor], samples: int, chunk: int) -> Tensor:
    """:math:`\\log \\frac1K \\sum_{i \\le K} w_i` from ``log_weights(n)`` (``n`` fresh draws, shape ``(n, *batch)``).

    Draws come ``chunk`` at a time; the log-sum-exps of the chunks are combined
    with ``logaddexp``, so only one chunk is ever in memory.
    """
    if samples < 1 or chunk < 1:
        raise ValueError(f"samples and chunk must be positive, got {samples} and {chunk}")
    total: Tensor | None = None
    for start in range(0, samples, chunk):
        part = log_weights(min(chunk, samples - start)).logsumexp(0)
        total = part if total is None else total.logaddexp(part)
    assert total is not None
    return total - math.log(samples)


class IWAEParams(VAEParams):
    objective: Literal["iwae"] = Field("iwae", description="always the IWAE bound")
    samples: int = Field(5, gt=0, description="importance samples k")


def build_iwae(p: IWAEParams, ctx: BuildContext) -> VAE:
    """Negative k-sample importance-weighted bound of a VAE (Burda et al. 2016)."""
    return VAE(ctx.component(p.encoder), ctx.component(p.decoder), ctx.component(p.prior), p)
