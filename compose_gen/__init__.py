"""compose_gen: compose deep generative models from declarative specs.

The public surface for users and plugin authors::

    import compose_gen as cg

    spec = cg.load_spec("specs/vae_digits.yaml", overrides=["train.steps=200"])
    run = cg.train(spec, out="runs/vae")       # trains, checkpoints, evaluates
    run = cg.load_run("runs/vae")              # back from the folder alone
    images = run.sample(16)
    print(run.evaluate())

A plugin's ``Params`` annotate the fields that name parts of the spec:
``Ref("encoder")`` a component of that kind (a name or an inline definition),
``Value`` a graph value or batch field (its tensor arrives in ``inputs[name]``),
``LossName`` a loss under ``losses:``; each is checked before anything is built.
"""

from compose_gen.core import (
    Bijector,
    BuildContext,
    Chain,
    ClassConditions,
    EvalContext,
    Latch,
    Loss,
    Sampler,
    Splits,
    TensorData,
    broadcast_value,
    copy_from_first_process,
    draw_count,
    eager_under_compile,
    importance_sampled_log_likelihood,
    log_mean_exp,
    repeat_for_draws,
    sum_over_processes,
    sum_rightmost,
)
from compose_gen.registry import (
    Catalogue,
    ComponentType,
    LossName,
    Params,
    Ref,
    MAX_SIZE,
    Seed,
    Size,
    Value,
    hookimpl,
    make_catalogue,
)

__version__ = "0.1.0"

__all__ = [
    "Bijector",
    "BuildContext",
    "Catalogue",
    "Chain",
    "ClassConditions",
    "ComponentType",
    "EvalContext",
    "Latch",
    "Loss",
    "LossName",
    "Params",
    "Ref",
    "Sampler",
    "MAX_SIZE",
    "Seed",
    "Size",
    "Splits",
    "TensorData",
    "Value",
    "broadcast_value",
    "copy_from_first_process",
    "draw_count",
    "eager_under_compile",
    "hookimpl",
    "importance_sampled_log_likelihood",
    "log_mean_exp",
    "repeat_for_draws",
    "make_catalogue",
    "sum_over_processes",
    "sum_rightmost",
]

# The user-facing workflow (imported last: these layers build on the ones above).
from compose_gen.api import build, load_run, load_spec, train  # noqa: E402
from compose_gen.spec import SpecError, SpecWarning  # noqa: E402

__all__ += ["SpecError", "SpecWarning", "build", "load_run", "load_spec", "train"]
