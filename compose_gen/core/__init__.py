"""Protocols and conventions shared by every layer: bijectors, distributions, data, plugin contracts, pictures."""

from compose_gen.core.bijector import Bijector, Chain, Direction, check_invertible
from compose_gen.core.contracts import BuildContext, ClassConditions, ContractError, EvalContext, Loss, Metric, Sampler, batches, describe_value
from compose_gen.core.data import MAX_CLASSES, Batch, Splits, TensorData, first_flagged
from compose_gen.core.data_space import check_ladj, constant_features, continuous_density_caveat, few_values, ladj_field, not_in_data_space
from compose_gen.core.distributions import MAX_DRAWS, bits_per_dim, broadcast_value, draw_count, importance_sampled_log_likelihood, log_mean_exp, repeat_for_draws, sum_rightmost
from compose_gen.core.eager import eager_under_compile
from compose_gen.core.files import make_parent, replaced_atomically
from compose_gen.core.images import MAX_PICTURES, class_columns, save_grid, save_point_sets, save_scatter
from compose_gen.core.latch import Latch
from compose_gen.core.processes import copy_from_first_process, sum_over_processes
from compose_gen.core.seeds import derive_seed, offset_seed

__all__ = [
    "MAX_CLASSES",
    "MAX_DRAWS",
    "MAX_PICTURES",
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
    "bits_per_dim",
    "broadcast_value",
    "check_invertible",
    "check_ladj",
    "class_columns",
    "constant_features",
    "continuous_density_caveat",
    "copy_from_first_process",
    "derive_seed",
    "describe_value",
    "draw_count",
    "eager_under_compile",
    "few_values",
    "first_flagged",
    "importance_sampled_log_likelihood",
    "ladj_field",
    "log_mean_exp",
    "make_parent",
    "not_in_data_space",
    "offset_seed",
    "repeat_for_draws",
    "replaced_atomically",
    "save_grid",
    "save_point_sets",
    "save_scatter",
    "sum_over_processes",
    "sum_rightmost",
]
