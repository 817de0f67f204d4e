"""A dry run on a few real examples, to find shape and kind mismatches before training.

Every player's plan runs forward once on the first examples (with the largest
label among them) and the sampler draws as many (or one of each class, when it
samples by class).  A
failure is reported at the innermost component that was running (tracked by
forward hooks), or at the graph value or loss being computed; what a loss or the
sampler returns is checked against its contract (components' outputs are
checked by :mod:`compose_gen.compiler.checks`); ``torch.distributions`` checks
the parameters and values it is given, even after ``torch.compile`` turned that
off for the process.  Parameters,
buffers (e.g. actnorm's data-dependent initialisation) and the RNG are restored
afterwards, so the dry run leaves no trace.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import Any, Iterator

import torch
from torch import Tensor
from torch.distributions import Distribution

from compose_gen.compiler.expressions import parse_call
from compose_gen.compiler.checks import enforce, finite, nonfinite_examples, nonfinite_sources
from compose_gen.compiler.plan import parameters_named, term_address
from compose_gen.core import Splits, TensorData
from compose_gen.core.contracts import check_loss_result, check_samples
from compose_gen.core.errors import described
from compose_gen.registry import suggest
from compose_gen.spec import Declared, Problem, SpecError

__all__ = ["dry_run"]

#: Odd and unlike common event sizes (2-D points, RGB channels), so a batch dimension mistaken for an event one shows.
DRY_RUN_EXAMPLES = 5
#: The dry run's batch sizes, the first that no count written in the graph is; all unlike common event sizes.
_SIZES = (DRY_RUN_EXAMPLES, 7, 11, 13, 17, 19, 23, 29, 31, 37)


def _batch_size(spec: Any) -> int:
    """The first of :data:`_SIZES` (then odd sizes past them) that no count written in the graph is:
    ``noise.sample(5)`` against a batch of 5 would pass, and the training batch then meet 5 fakes."""
    counts = {a for text in spec.model.graph.values() for a in parse_call(text).args if isinstance(a, int)}
    return next(n for n in itertools.chain(_SIZES, itertools.count(_SIZES[-1] + 2, 2)) if n not in counts)


def dry_run(model: Any, data: Splits) -> None:
    """Run every plan, the values no plan needs and the sampler once on the first examples of ``data.train``,
    raising a located :class:`SpecError` at the first failure and warning of suspect samples; ``model`` is left as
    it was found (see the module docstring)."""
    spec = model.spec
    device = model.device
    size = _batch_size(spec)
    batch = {k: v.to(device) for k, v in data.train.batch(_examples(data.train, size)).items()}
    shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in batch.items())
    on_batch = f" on a batch of {len(next(iter(batch.values())))} ({shapes})"
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    stack: list[str] = []
    logged: set[str] = set()
    logged_by: dict[str, str] = {}  # what each loss logs: the key, and the loss
    computed: dict[str, Any] = dict(batch)  # every value some plan computed, for the ones no plan needs
    # The model's own generators only: touching CUDA for a CPU model breaks it in a forked process (a DataLoader
    # worker, a gloo group) once the parent has used CUDA.
    cuda = [device] if device.type == "cuda" else []
    try:
        with (
            torch.random.fork_rng(cuda),
            _validating_distributions(),
            _tracking(model, stack),
            nonfinite_sources(model._all_components) as nonfinite,
            torch.enable_grad(),
        ):
            for plan in model.plans.values():
                nonfinite.clear()
                logged.add(f"{plan.player}.grad_norm")
                values: dict[str, Any] = dict(batch)
                for step in plan.values:
                    with _located(spec, stack, nonfinite, ("graph", step.name), f"computing value {step.name!r}", on_batch):
                        values[step.name] = step.fn(values)
                reached: dict[str, set[int]] = {}
                for call in plan.losses:
                    inputs = call.gather(values)
                    with _located(spec, stack, nonfinite, spec.sections.losses[call.name], f"computing loss {call.name!r}", on_batch):
                        result = call.module(inputs, call.terms)
                    enforce(spec, spec.sections.losses[call.name], check_loss_result, result, call.terms)
                    _check_finite(spec, call.name, result, call.terms, shapes, nonfinite, inputs)
                    logged_by.update({term_address(call.name, key): call.name for key in result})
                    # a term logged with weight 0 trains nothing, so it needs no gradient path, nor counts as one
                    reached.update({term_address(call.name, t): _reached(result[t], plan.params) for t in sorted(call.trained)})
                _check_reach(model, plan, reached)
                computed.update(values)
            nonfinite.clear()
            _remaining_values(model, computed, stack, nonfinite, on_batch)
            _check_values_read(model, computed, data)
            if model.sampler is not None:
                nonfinite.clear()
                conditions = model.conditions  # sampled by class: every class, and a count unlike the class count
                n = DRY_RUN_EXAMPLES + (conditions.classes if conditions is not None else 0)
                with _located(spec, stack, nonfinite, spec.sections.sampler, f"drawing {n} samples", ""):
                    drawn = model.draw(n)
                enforce(spec, spec.sections.sampler, check_samples, drawn, n)
                expected = tuple(data.train.event_shape("x")) if "x" in data.train.fields else None
                if expected is not None and tuple(drawn.shape[1:]) != expected:
                    raise spec.blame(spec.sections.sampler, f"drew samples of shape {tuple(drawn.shape[1:])}; the data's x have {expected}")
                broken = nonfinite_examples(drawn)
                if broken:  # not an error: training may yet fix it, but a sample grid of the untrained model is a hint
                    spec.warn_of(spec.sections.sampler, f"drew {broken} of {n} samples with NaN or infinite values from the untrained model")
    finally:
        model.load_state_dict(saved)
    _check_logged_apart(model, logged_by)
    logged.update(logged_by)
    _check_best_metric(spec, logged)
    _check_terms_read(model, logged)


def _remaining_values(model: Any, computed: dict[str, Any], stack: list[str], nonfinite: list[str], on_batch: str) -> None:
    """The graph values no player needs (read by a metric, or by nothing), without gradients; ``computed`` holds the rest."""
    with torch.no_grad():
        for name in model.graph.values_in_order(set(model.graph.graph.nodes)):
            if name not in computed:
                with _located(model.spec, stack, nonfinite, ("graph", name), f"computing value {name!r}", on_batch):
                    computed[name] = model._evaluators[name](computed)


def _check_values_read(model: Any, computed: dict[str, Any], data: Any) -> None:
    """A metric that reads graph values checks them with its ``check_values(values, data)``, if it has one, on the values
    computed here: what it could not use is refused by validate, not at the evaluation after training."""
    spec = model.spec
    for declared, metric in zip(spec.sections.metrics, model.metrics, strict=True):
        check = getattr(metric, "check_values", None)
        if check is not None:
            try:
                check(computed, data)
            except ValueError as error:
                remedy = "name other values, or leave the metric out (a run folder trained with it loads with --set 'evaluate.metrics=[...]')"
                raise spec.blame(declared, f"{error}: {remedy}") from None


def _check_finite(
    spec: Any, loss: str, result: dict[str, Tensor], terms: frozenset[str], shapes: str, nonfinite: list[str], inputs: Any
) -> None:
    """An untrained model's loss on real examples is finite; NaN or inf there is a mismatch of data and model, or a bug.

    The first component that made non-finite values of finite inputs, if one did, is blamed; else the loss itself
    when its inputs were finite; else the values it read (a graph expression's arithmetic on the data).
    """
    values = {t: float(result[t].detach()) for t in sorted(terms)}
    bad = [f"{term_address(loss, t)}={v:g}" for t, v in values.items() if not math.isfinite(v)]
    if bad and nonfinite:
        raise spec.blame(
            spec.sections.components[nonfinite[0]],
            f"turned finite inputs into NaN or infinite values on the dry run's batch ({shapes}), so loss {loss!r} is non-finite "
            f"before any training step ({', '.join(bad)}): a bug in the component, or data outside where it is defined "
            "(a logit needs (0, 1))",
        )
    if bad and not finite(inputs):  # read only once the loss is known to be non-finite
        raise spec.error(
            ("losses", loss),
            f"non-finite inputs, so a non-finite loss before any training step ({', '.join(bad)}) on the dry run's batch "
            f"({shapes}): do the data's values lie where the graph's expressions are defined?",
        )
    if bad:
        infinite = [result[t] for t, v in values.items() if math.isinf(v)]
        overflow = (
            f"a setting too large for {str(infinite[0].dtype).removeprefix('torch.')} (it overflows past "
            f"{torch.finfo(infinite[0].dtype).max:.3g}), "
            if len(infinite) == len(bad)
            else ""
        )
        raise spec.blame(
            spec.sections.losses[loss],
            f"turned finite inputs into a non-finite loss before any training step ({', '.join(bad)}) on the dry run's batch "
            f"({shapes}): {overflow}a bug in the loss, or data outside where it is defined (a logit needs (0, 1))",
        )


def _reached(term: Tensor, params: list[Tensor]) -> set[int]:
    """The ids of the ``params`` that ``term`` has a gradient path to."""
    params = [p for p in params if p.requires_grad]
    if not term.requires_grad or not params:
        return set()
    grads = torch.autograd.grad(term, params, allow_unused=True, retain_graph=True)
    return {id(p) for p, g in zip(params, grads, strict=True) if g is not None}


def _check_reach(model: Any, plan: Any, reached: dict[str, set[int]]) -> None:
    """Every term of a player trains some of its parameters, and every component it names is trained by some term.

    The graph says what a term reads; only autograd sees what a loss detaches
    (a gradient penalty's interpolates, a critic's fake inputs), so a term put
    under the wrong player, or a component no term reaches, is found here.
    """
    spec, path = model.spec, ("players", plan.player)
    problems = []
    for address, ids in reached.items():
        if not ids and not spec.model.players:  # the one implicit player: the loss is to blame, not a section the file lacks
            loss = address.split(".", 1)[0]
            problems += spec.blame(spec.sections.losses[loss], (
                f"term {address} has no gradient path to any parameter (the loss detaches what it reads, or reads nothing "
                "trainable), so it trains nothing"
            )).problems
        elif not ids:
            problems.append(Problem((*path, "terms"), (
                f"{address} has no gradient path to the parameters of player {plan.player!r} (the loss detaches what they make), "
                "so it trains nothing here: is it meant for another player?"
            )))
    named = plan.spec.params
    if not problems and named != "all":
        trained = set().union(*reached.values())
        for i, component in enumerate(named):
            own = {id(p) for p in parameters_named(component, model.all_components, model.losses) or () if p.requires_grad}
            if own and not own & trained:
                problems.append(Problem((*path, "params", i), (
                    f"none of the terms of player {plan.player!r} ({', '.join(reached)}) has a gradient path to {component!r}, "
                    "so its parameters would never train"
                )))
    if problems:
        raise SpecError(problems, spec.source)
    if named == "all" and not spec.model.players:  # the implicit player: what no term reaches is left as built
        trained = set().union(*reached.values())
        for name, module in model.components.items():
            own = {id(p) for p in module.parameters() if p.requires_grad}
            if own and not own & trained:
                spec.warn_of(
                    spec.sections.components[name],
                    "has parameters that no loss term has a gradient path to, so training leaves them as they are built",
                )


def _examples(data: TensorData, size: int) -> Tensor:
    """The first ``size`` examples, with the one holding the largest value of each integer field (a class label) among them.

    A label beyond a component's ``num_classes`` then fails in the dry run, not at
    the training step whose batch first holds it.
    """
    index = list(range(min(size, len(data))))
    slot = len(index) - 1
    for values in data.fields.values():
        if values.is_floating_point() or values.numel() == 0 or slot < 0:
            continue
        largest = int(values.reshape(len(values), -1).max(1).values.argmax())
        if largest not in index:
            index[slot] = largest
            slot -= 1
    return torch.tensor(index)


def _check_logged_apart(model: Any, logged_by: dict[str, str]) -> None:
    """No loss logs a key the trainer logs for a player (``gp.grad_norm`` of a ``gradient_penalty`` named ``gp``, beside a
    player ``gp``'s gradient norm): one would overwrite the other in every log line, unseen."""
    spec = model.spec
    for player in model.plans:
        for what in ("grad_norm", "lr", "overflowed"):
            loss = logged_by.get(f"{player}.{what}")
            if loss is not None:
                raise spec.blame(
                    spec.sections.losses[loss],
                    f"logs {player}.{what}, as player {player!r} does its {what}, and one would overwrite the other in the "
                    "training log: rename the loss or the player",
                )


def _check_terms_read(model: Any, logged: set[str]) -> None:
    """A metric that reads logged terms by name (its ``terms_read``) names ones the losses log (``evaluate_terms`` gives)."""
    spec = model.spec
    terms = logged - {f"{player}.grad_norm" for player in model.plans}
    for declared, metric in zip(spec.sections.metrics, model.metrics, strict=True):
        for name in getattr(metric, "terms_read", ()):
            if name not in terms:
                raise spec.blame(declared, f"reads {name!r}, which no loss logs{suggest(name, terms)}; logged: {', '.join(sorted(terms))}")


def _check_best_metric(spec: Any, logged: set[str]) -> None:
    """``train.best_metric`` must be among what training logs, or no best checkpoint could ever be found."""
    metric = spec.model.train.best_metric
    if metric is not None and metric not in logged:
        raise spec.error(
            ("train", "best_metric"), f"{metric!r} is not a logged metric{suggest(metric, logged)}; logged: {', '.join(sorted(logged))}"
        )


@contextlib.contextmanager
def _validating_distributions() -> Iterator[None]:
    """``torch.distributions``' argument checks on, the process's setting restored after.

    ``torch.compile`` turns them off for the rest of the process (so that they do not
    break graphs), which would leave a later dry run blind to, say, a negative scale.
    """
    before = Distribution._validate_args
    Distribution.set_default_validate_args(True)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(before)


@contextlib.contextmanager
def _tracking(model: Any, stack: list[str]) -> Iterator[None]:
    """Keep ``stack`` equal to the components whose forward is running."""
    handles = []
    for name, module in model._all_components.items():
        handles.append(module.register_forward_pre_hook(lambda *_, n=name: stack.append(n)))
        handles.append(module.register_forward_hook(lambda *_, n=name: _pop(stack, n)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _pop(stack: list[str], name: str) -> None:
    if stack and stack[-1] == name:
        stack.pop()


@contextlib.contextmanager
def _located(spec: Any, stack: list[str], nonfinite: list[str], where: tuple[Any, ...] | Declared, what: str, on: str) -> Iterator[None]:
    """Report a failure inside at the innermost component running, else at ``where`` (a path, or a declaration named
    with its plugin); or at the component that made NaN or inf of finite inputs before, when one did."""
    stack.clear()
    try:
        yield
    except SpecError:
        raise
    except Exception as error:
        made_nan = ""
        if nonfinite:
            where, made_nan = spec.sections.components[nonfinite[0]], "turned finite inputs into NaN or infinite values, and then "
        elif stack:
            where = spec.sections.components[stack[-1]]
            what = f"{what} (in component {stack[-1]!r})"
        message = f"{made_nan}dry run failed {what}{on}: {described(error)}"
        if isinstance(where, Declared):
            raise spec.blame(where, message + spec.catalogue.where_raised(error, where.type.name)) from None
        raise SpecError([Problem(where, message)], spec.source) from None
