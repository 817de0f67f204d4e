"""Generic metrics: every loss term averaged over the test split.

For a VAE this is the test ELBO (and its KL and reconstruction parts); for a
flow, the test NLL in nats and bits per dimension.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from pydantic import Field

from compose_gen import BuildContext, ComponentType, EvalContext, Params, hookimpl
from compose_gen.core import batches

__all__ = ["HeldOutLosses"]


class HeldOutLosses:
    """Example-weighted means of every player's loss terms and metrics on the test split."""

    def __init__(self, only: list[str] | None) -> None:
        self.only = only
        #: The logged names it reads, which the dry run checks against what the losses log.
        self.terms_read = tuple(only or ())

    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        count = 0
        torch.manual_seed(ctx.seed)
        for batch in batches(ctx.test, ctx.batch_size, ctx.device):
            n = len(next(iter(batch.values())))
            for key, value in ctx.model.evaluate_terms(batch).items():
                if self.only is None or key in self.only:
                    totals[key] += float(value) * n
            count += n
        return {f"test/{key}": total / count for key, total in totals.items()}


class HeldOutLossesParams(Params):
    only: list[str] | None = Field(None, description="term names to keep (default: all)")


def build_held_out_losses(p: HeldOutLossesParams, ctx: BuildContext) -> HeldOutLosses:
    """Every loss term and loss metric averaged over the test split."""
    return HeldOutLosses(p.only)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [ComponentType("test_losses", "metric", HeldOutLossesParams, build_held_out_losses)]
