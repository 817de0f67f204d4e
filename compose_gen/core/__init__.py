"""Protocols and conventions shared by every layer: bijectors, distributions, data, plugin contracts."""

from compose_gen.core.bijector import Bijector, Chain, Direction
from compose_gen.core.contracts import BuildContext, ClassConditions, ContractError, EvalContext, Loss, Metric, Sampler, batches
from compose_gen.core.data import Batch, Splits, TensorData, first_flagged
from compose_gen.core.distributions import broadcast_value, importance_sampled_log_likelihood, log_mean_exp, repeat_for_draws, sum_rightmost
from compose_gen.core.latch import Latch

__all__ = [
    "Batch",
    "Bijector",
    "BuildContext",
    "Chain",
    "ClassConditions",
    "ContractError",
    "Direction",
    "EvalContext",
    "Latch",
    "Loss",
    "Metric",
    "Sampler",
    "Splits",
    "TensorData",
    "batches",
    "broadcast_value",
    "first_flagged",
    "importance_sampled_log_likelihood",
    "log_mean_exp",
    "repeat_for_draws",
    "sum_rightmost",
]
