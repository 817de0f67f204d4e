"""Conformance kit for priors, encoders, decoders, samplers, losses and metrics.

The bare ``check_*`` functions of :mod:`compose_gen.core.contracts` test one value a
plugin returned; the checks here call a plugin's object the way compose_gen does and
test what it returns, so a plugin author's test is one line::

    from compose_gen.testing.components import check_decoder, check_encoder, check_loss, check_metric, check_prior, check_sampler

    check_prior(MyPrior((4,)))
    check_encoder(encoder, x)                 # x: (n, *event) with one batch dimension
    check_decoder(decoder, z, context=c)      # c: one row per example
    check_sampler(sampler)
    check_loss(loss, {"x": x, ...})
    check_metric(metric, eval_ctx)

A failure raises :class:`~compose_gen.core.contracts.ContractError` that names the
object, what is wrong and what was expected.  What each check verifies:

* **distribution modules** (:func:`check_distribution_module`, and its wrappers
  :func:`check_prior`, :func:`check_encoder`, :func:`check_decoder`): ``forward``
  returns a ``Distribution`` passing ``check_distribution``, of batch shape ``(n,)``
  for ``n`` input rows (``()`` for a prior); ``sample``/``rsample`` give
  ``(m, *batch, *event)`` and ``log_prob`` of them ``(m, *batch)``, finite; examples
  are independent; the module broadcasts over **prepended sample dimensions**: given
  an input of shape ``(*S, n, ...)`` (slice ``i`` being the batch rolled by ``i``),
  its ``log_prob`` of values of shape ``(n, ...)`` has shape ``(*S, n)`` and equals,
  slice by slice, the module applied to that slice, a context of ``n`` rows being
  broadcast the same way; given a context, changing it changes ``log_prob`` (the
  model uses it); every parameter receives a finite gradient from ``log_prob``, and
  with ``has_rsample`` the draws of ``rsample`` carry gradients to the parameters
  (``sample_shape=()`` skips the sample dimensions, for an encoder only applied to data).
  A prior also takes ``temperature`` (which changes its draws), and its
  ``sample``/``rsample`` graph methods draw ``(n, *event)`` at that temperature,
  ``rsample``'s with gradients.
* **samplers** (:func:`check_sampler`): ``check_conditions``; ``check_samples`` and
  finiteness for several counts (1, ``n``, and ``classes + 1`` when it samples by
  class), every count giving examples of one shape; a temperature is accepted; a
  sampler that samples by class draws other samples for other labels.
* **losses** (:func:`check_loss`): ``check_loss_terms``; ``check_loss_result``; every
  entry finite; each requested term's gradient reaches some parameter or input that
  requires grad (at least one must: make the inputs as a player would), and is
  finite; with ``grad_to``, it reaches the inputs named there; a term with
  ``term_inputs`` has the same value computed from just those inputs.
* **metrics** (:func:`check_metric`): ``check_metric_result``; values finite,
  unless their key is in ``allow_nonfinite`` (for a metric that reports NaN where it
  is undefined, e.g. on too few samples: say so explicitly); the model's parameters,
  buffers, training mode and ``requires_grad`` flags, and the data's splits, are
  left as they were.

Distribution modules are checked on a deep copy in eval mode whose parameters are
perturbed (``param_noise``, so zero-initialised layers show what they read);
samplers are called in eval mode, losses as they are; all with a seeded random
stream, the caller's left as it was.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from typing import Any, Callable, Collection, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution

from compose_gen.core.contracts import (
    ContractError,
    EvalContext,
    Loss,
    Sampler,
    check_conditions,
    check_distribution,
    check_loss_result,
    check_loss_terms,
    check_metric_result,
    check_samples,
    describe_value,
)

__all__ = [
    "check_decoder",
    "check_distribution_module",
    "check_encoder",
    "check_loss",
    "check_metric",
    "check_prior",
    "check_sampler",
]

#: Tolerances of the comparisons of ``log_prob`` values (float32 by default).
ATOL, RTOL = 1e-4, 1e-4


# --------------------------------------------------------------------------- helpers


def _fail(label: str, problem: str) -> ContractError:
    return ContractError(f"{label}: {problem}")


def _name(obj: Any) -> str:
    """A function's name, or an object's class name."""
    return getattr(obj, "__name__", None) or type(obj).__name__


def _shape(shape: Sequence[int]) -> str:
    return str(tuple(shape))


def _finite(label: str, what: str, value: Tensor) -> None:
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise _fail(label, f"{what} has {bad} non-finite values of {value.numel()}; expected finite values")


def _close(label: str, what: str, actual: Tensor, expected: Tensor, atol: float, rtol: float) -> None:
    error = (actual.detach() - expected.detach()).abs()
    if actual.shape != expected.shape or not bool((error <= atol + rtol * expected.detach().abs()).all()):
        detail = f"shape {_shape(actual.shape)} vs {_shape(expected.shape)}" if actual.shape != expected.shape else f"max error {error.max().item():.3g}"
        raise _fail(label, f"{what} ({detail}, tolerance atol={atol:g}, rtol={rtol:g})")


@contextlib.contextmanager
def _evaluating(module: Any) -> Iterator[None]:
    """``module`` (and everything in it) in eval mode, each submodule's mode restored afterwards."""
    modes = [(m, m.training) for m in module.modules()] if isinstance(module, nn.Module) else []
    for m, _ in modes:
        m.training = False
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """A forked global random stream seeded with ``seed`` (the caller's stream is left as it was)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def _core(label: str, check: Callable[..., Any], *args: Any) -> Any:
    """A :mod:`compose_gen.core.contracts` check, its :class:`ContractError` prefixed with ``label``."""
    try:
        return check(*args)
    except ContractError as error:
        raise _fail(label, str(error)) from None


def _same(a: Tensor, b: Tensor) -> bool:
    """Equal, NaN where the other is NaN too."""
    return torch.equal(a, b) or (a.shape == b.shape and a.is_floating_point() and bool(((a == b) | (a.isnan() & b.isnan())).all()))


@contextlib.contextmanager
def _calling(label: str, call: str) -> Iterator[None]:
    """Report an exception raised by the plugin's code as a :class:`ContractError` naming the call (chained to it)."""
    try:
        yield
    except ContractError:
        raise
    except Exception as error:
        raise _fail(label, f"{call} raised {type(error).__name__}: {error}") from error


# --------------------------------------------------------------------------- distribution modules


class _Caller:
    """Calls a distribution module as compose_gen does: ``module(given, context)``, omitting what is None."""

    def __init__(self, module: nn.Module, label: str, given_name: str | None) -> None:
        self.module, self.label, self.given_name = module, label, given_name

    def __call__(self, given: Tensor | None, context: Tensor | None, **kwargs: Any) -> Distribution:
        args = [a for a in (given, context) if a is not None]
        names = [n for n, a in ((self.given_name, given), ("context", context)) if a is not None]
        shown = [f"{n} of shape {_shape(a.shape)}" for n, a in zip(names, args, strict=True)] + [f"{k}={v}" for k, v in kwargs.items()]
        with _calling(self.label, f"forward({', '.join(shown)})"):
            dist = self.module(*args, **kwargs)
        _core(self.label, check_distribution, dist, args[0] if args else None)
        return dist

    def batch(self, dist: Distribution, batch: Sequence[int], what: str) -> None:
        if tuple(dist.batch_shape) != tuple(batch):
            raise _fail(self.label, f"{what} has batch shape {_shape(dist.batch_shape)}, expected {_shape(batch)} (one distribution per example)")

    def log_prob(self, dist: Distribution, values: Tensor, shape: Sequence[int], what: str) -> Tensor:
        """``dist.log_prob(values)``, checked to have ``shape`` and be finite."""
        with _calling(self.label, f"log_prob of values of shape {_shape(values.shape)} under {what}"):
            lp = dist.log_prob(values)
        if tuple(lp.shape) != tuple(shape):
            raise _fail(self.label, f"log_prob of values of shape {_shape(values.shape)} under {what} has shape {_shape(lp.shape)}, expected {_shape(shape)}")
        _finite(self.label, f"log_prob under {what}", lp)
        return lp


def check_distribution_module(
    module: nn.Module,
    given: Tensor | None = None,
    context: Tensor | None = None,
    *,
    given_name: str = "input",
    other_context: Tensor | None = None,
    sample_shape: tuple[int, ...] = (2,),
    draws: int = 3,
    param_noise: float = 0.1,
    atol: float = ATOL,
    rtol: float = RTOL,
    seed: int = 0,
    label: str | None = None,
) -> Distribution:
    """Check a module whose ``forward`` returns a distribution (see the module docstring); returns the distribution.

    ``given`` (an encoder's x, a decoder's z; None for a prior) has one batch
    dimension of ``n`` examples; ``context`` has one row per example (for a
    conditional prior, the rows are the examples).  ``other_context`` is the context
    that must change the output (default: the rows of ``context`` rolled by one).
    The checks run on a copy whose parameters are perturbed by Gaussian noise of
    std ``param_noise``, so that zero-initialised layers (a flow's couplings start
    as the identity) show what they depend on.
    """
    label = label or type(module).__name__
    rows = given if given is not None else context
    batch = tuple(rows.shape[:1]) if rows is not None else ()
    with _seeded(seed):
        call = _Caller(_perturbed(module, param_noise), label, given_name)
        dist = call(given, context)
        call.batch(dist, batch, f"forward's distribution for {len(rows) if rows is not None else 'no'} input rows")
        values = _check_draws(call, dist, batch, draws)
        if rows is not None:
            _check_independent(call, given, context, values, dist, atol, rtol)
            _check_sample_dims(call, given, context, values, sample_shape, atol, rtol)
        if context is not None:
            _check_context_used(call, given, context, other_context, values, dist, atol, rtol)
        _check_gradients(call, given, context, values)
    return dist


def _perturbed(module: nn.Module, noise: float) -> nn.Module:
    """An eval-mode copy of ``module`` with Gaussian noise of std ``noise`` added to every parameter."""
    module = copy.deepcopy(module).eval()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(noise * torch.randn_like(parameter))
    return module


def _check_draws(call: _Caller, dist: Distribution, batch: tuple[int, ...], draws: int) -> Tensor:
    """Shapes and finiteness of ``sample``, ``rsample`` and ``log_prob``; returns one draw per example."""
    expected = (draws, *batch, *dist.event_shape)
    methods = ("sample", "rsample") if dist.has_rsample else ("sample",)
    for method in methods:
        with torch.no_grad():
            drawn = getattr(dist, method)((draws,))
        if tuple(drawn.shape) != expected:
            raise _fail(call.label, f"{method}(({draws},)) has shape {_shape(drawn.shape)}, expected {_shape(expected)} (sample, batch and event shape)")
        _finite(call.label, f"{method}(({draws},))", drawn)
        with torch.no_grad():
            call.log_prob(dist, drawn, (draws, *batch), f"the distribution (its own {method} draws)")
    with torch.no_grad():
        return dist.sample()


def _check_independent(
    call: _Caller, given: Tensor | None, context: Tensor | None, values: Tensor, dist: Distribution, atol: float, rtol: float
) -> None:
    """Each example's log_prob is the same alone as in the batch."""
    with torch.no_grad():
        in_batch = dist.log_prob(values)
    for i in range(len(values)):
        what = f"the distribution of example {i} alone"
        one = call(*(None if t is None else t[i : i + 1] for t in (given, context)))
        call.batch(one, (1,), what)
        with torch.no_grad():
            alone = call.log_prob(one, values[i : i + 1], (1,), what)
        _close(call.label, f"examples are not independent: example {i}'s log_prob alone differs from its log_prob in the batch; "
               "expected equal", alone, in_batch[i : i + 1], atol, rtol)


def _stacked(rows: Tensor, sample_shape: tuple[int, ...]) -> Tensor:
    """``rows`` repeated over prepended ``sample_shape``, slice ``i`` (flattened) rolled by ``i`` along the batch."""
    slices = [rows.roll(i, 0) for i in range(math.prod(sample_shape))]
    return torch.stack(slices).reshape(*sample_shape, *rows.shape)


def _check_sample_dims(
    call: _Caller, given: Tensor | None, context: Tensor | None, values: Tensor, sample_shape: tuple[int, ...], atol: float, rtol: float
) -> None:
    """An input with prepended sample dimensions gives, slice by slice, the module applied to each slice."""
    def at(rows: Tensor) -> Distribution:
        return call(rows, context) if given is not None else call(None, rows)

    stacked = _stacked(given if given is not None else context, sample_shape)
    try:
        big = at(stacked)
    except ContractError as error:
        hint = " and broadcast its context (one row per example) to them" if context is not None and given is not None else ""
        raise ContractError(f"{error}; with sample dimensions {sample_shape} prepended to its input, it must broadcast over them{hint}") from error.__cause__
    what = f"the distribution for an input of shape {_shape(stacked.shape)} (sample dimensions {sample_shape} prepended)"
    call.batch(big, (*sample_shape, len(values)), what)
    with torch.no_grad():
        lp = call.log_prob(big, values, (*sample_shape, len(values)), what)
        for i in itertools.product(*map(range, sample_shape)):
            expected = at(stacked[i]).log_prob(values)
            problem = (f"does not broadcast over prepended sample dimensions: log_prob at sample index {i} of {what} differs from "
                       f"the module applied to that slice alone{' with the same context' if context is not None and given is not None else ''}; "
                       f"expected equal")
            _close(call.label, problem, lp[i], expected, atol, rtol)


def _check_context_used(
    call: _Caller, given: Tensor | None, context: Tensor, other: Tensor | None, values: Tensor, dist: Distribution, atol: float, rtol: float
) -> None:
    """Another context gives another distribution."""
    how = "rows rolled by one" if other is None else "other_context"
    other = context.roll(1, 0) if other is None else other
    if torch.equal(other, context):
        raise ValueError(f"{call.label}: every row of the context is the same; give rows that differ, or other_context")
    with torch.no_grad():
        changed = call(given, other).log_prob(values)
        unchanged = dist.log_prob(values)
    if bool(((changed - unchanged).abs() <= atol + rtol * unchanged.abs()).all()):
        raise _fail(call.label, "ignores its context: log_prob of the same values is unchanged when the context changes "
                    f"({how}); expected a conditional model to read it")


def _check_gradients(call: _Caller, given: Tensor | None, context: Tensor | None, values: Tensor) -> None:
    """``log_prob`` gives every parameter a finite gradient; ``rsample`` draws carry gradients when ``has_rsample``."""
    named = [(n, p) for n, p in call.module.named_parameters() if p.requires_grad]
    if named:
        with torch.enable_grad():
            _check_gradients_of(call, named, call(given, context), values)


def _check_gradients_of(call: _Caller, named: list[tuple[str, nn.Parameter]], dist: Distribution, values: Tensor) -> None:
    grads = torch.autograd.grad(dist.log_prob(values.detach()).sum(), [p for _, p in named], allow_unused=True, retain_graph=True)
    for (name, _), grad in zip(named, grads, strict=True):
        if grad is None:
            raise _fail(call.label, f"parameter {name!r} gets no gradient from log_prob; expected every parameter to shape the distribution")
        _finite(call.label, f"the gradient of log_prob for parameter {name!r}", grad)
    if dist.has_rsample:
        drawn = dist.rsample()
        if not drawn.requires_grad:
            raise _fail(call.label, "has_rsample is True but rsample's draws carry no gradient (drawn without autograd?); "
                        "expected reparameterised draws, or has_rsample = False")
        grads = torch.autograd.grad(drawn.sum(), [p for _, p in named], allow_unused=True)
        for (name, _), grad in zip(named, grads, strict=True):
            if grad is not None:
                _finite(call.label, f"the gradient of rsample for parameter {name!r}", grad)


def check_prior(
    prior: nn.Module, context: Tensor | None = None, *, temperature: float = 0.5, n: int = 3, **options: Any
) -> Distribution:
    """:func:`check_distribution_module` on ``prior()`` (or ``prior(context)``), then its temperature and graph methods."""
    label = options.pop("label", None) or type(prior).__name__
    dist = check_distribution_module(prior, None, context, given_name="", label=label, **options)
    with _seeded(options.get("seed", 0)), torch.no_grad():
        call = _Caller(_perturbed(prior, options.get("param_noise", 0.1)), label, None)
        _check_temperature(call, context, temperature, dist)
        if context is None:
            _check_graph_methods(call.module, label, n, temperature, tuple(dist.event_shape))
    return dist


def _check_temperature(call: _Caller, context: Tensor | None, temperature: float, dist: Distribution) -> None:
    """``forward(temperature=T)`` gives a distribution of the same event shape whose draws differ from those at 1."""
    cooled = call(None, context, temperature=temperature)
    if cooled.event_shape != dist.event_shape:
        raise _fail(call.label, f"at temperature {temperature} the event shape is {_shape(cooled.event_shape)}, expected {_shape(dist.event_shape)}")
    state = torch.get_rng_state()
    hot = call(None, context).sample()
    torch.set_rng_state(state)
    if torch.equal(cooled.sample(), hot):
        raise _fail(call.label, f"ignores its temperature: draws at temperature {temperature} equal those at 1 (same seed); "
                    "expected the temperature to scale the spread")


def _check_graph_methods(prior: nn.Module, label: str, n: int, temperature: float, event: tuple[int, ...]) -> None:
    """``sample``/``rsample`` in ``graph_methods`` draw ``(n, *event)`` for a count or a tensor of ``n`` rows, at the temperature;
    ``rsample``'s draws carry gradients to the parameters."""
    for method in ("sample", "rsample"):
        if method not in getattr(prior, "graph_methods", ()):
            continue
        if not callable(getattr(prior, method, None)):
            raise _fail(label, f"lists {method!r} in graph_methods but has no method {method!r}")
        for like in (n, torch.zeros(n, 1)):
            shown = n if isinstance(like, int) else f"a tensor of shape {_shape(like.shape)}"
            drawn = _draw_from(prior, method, like, temperature, label, shown)
            if not isinstance(drawn, Tensor) or tuple(drawn.shape) != (n, *event):
                raise _fail(label, f"{method}({shown}, temperature={temperature}) returned {describe_value(drawn)}, expected shape {_shape((n, *event))}")
            _finite(label, f"{method}({shown})", drawn)
        if temperature != 1.0 and torch.equal(_draw_from(prior, method, n, temperature, label, n), _draw_from(prior, method, n, 1.0, label, n)):
            raise _fail(label, f"{method}({n}, temperature={temperature}) ignores its temperature: the same draws as at 1 (same seed); "
                        "expected the temperature to scale the spread (compose-gen sample --temperature uses it)")
        if method == "rsample" and any(p.requires_grad for p in prior.parameters()):
            with torch.enable_grad():
                drawn = _draw_from(prior, method, n, 1.0, label, n)
            if not drawn.requires_grad:
                raise _fail(label, "rsample's draws carry no gradient to the parameters (drawn without autograd?); expected reparameterised draws")


def _draw_from(prior: nn.Module, method: str, like: Tensor | int, temperature: float, label: str, shown: object) -> Any:
    """``prior.<method>(like, temperature=...)`` from a fixed seed, its exceptions reported as the call that raised."""
    with torch.random.fork_rng(), _calling(label, f"{method}({shown}, temperature={temperature})"):
        torch.manual_seed(0)
        return getattr(prior, method)(like, temperature=temperature)


def check_encoder(encoder: nn.Module, x: Tensor, context: Tensor | None = None, **options: Any) -> Distribution:
    """:func:`check_distribution_module` for q(z|x) (or q(z|x, c)): ``x`` of shape ``(n, *event)``."""
    return check_distribution_module(encoder, x, context, given_name="x", **options)


def check_decoder(decoder: nn.Module, z: Tensor, context: Tensor | None = None, **options: Any) -> Distribution:
    """:func:`check_distribution_module` for p(x|z) (or p(x|z, c)): ``z`` of shape ``(n, *latent_event)``."""
    return check_distribution_module(decoder, z, context, given_name="z", **options)


# --------------------------------------------------------------------------- samplers


def _device(module: nn.Module) -> torch.device:
    """Where ``module`` keeps its first parameter or buffer (CPU if it has none)."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _default_context(classes: int, value: str) -> Callable[[Tensor], Tensor]:
    """The labels themselves for ``y``, else their one-hot rows."""
    return (lambda labels: labels) if value == "y" else (lambda labels: F.one_hot(labels, classes).float())


def check_sampler(
    sampler: Sampler,
    n: int = 5,
    context: Callable[[Tensor], Tensor] | None = None,
    *,
    temperature: float = 0.7,
    seed: int = 0,
    label: str | None = None,
) -> Tensor:
    """Check a sampler (see the module docstring); returns its ``n`` draws at ``temperature``.

    A sampler that samples by class is given ``context(labels)`` for the labels
    ``arange(count) % classes``, as the spec's graph would make it from them; the
    default is the labels themselves when ``conditions.value`` is ``"y"``, else
    their one-hot rows (``one_hot(y, classes)``).
    """
    label = label or type(sampler).__name__
    _core(label, check_conditions, sampler)
    conditions = sampler.conditions
    counts = sorted({1, n} | ({conditions.classes + 1} if conditions is not None else set()))
    if conditions is not None and context is None:
        context = _default_context(conditions.classes, conditions.value)

    def draw(count: int, temp: float, shift: int = 0) -> Tensor:
        with _seeded(seed), torch.no_grad(), _evaluating(sampler), _calling(label, f"sample({count}, temperature={temp})"):
            if conditions is None:
                return sampler.sample(count, temp)
            labels = (torch.arange(count, device=_device(sampler)) + shift) % conditions.classes
            return sampler.sample(count, temp, context(labels))

    shape = None
    for count in counts:
        for temp in (1.0, temperature):
            drawn = draw(count, temp)
            try:
                check_samples(drawn, count)
            except ContractError as error:
                raise _fail(label, f"{error} (at temperature {temp})") from None
            _finite(label, f"sample({count}, temperature={temp})", drawn)
            if shape is not None and tuple(drawn.shape[1:]) != shape:
                raise _fail(label, f"sample({count}) draws examples of shape {_shape(drawn.shape[1:])}, sample({counts[0]}) of {_shape(shape)}; expected one shape")
            shape = tuple(drawn.shape[1:])
    drawn = draw(n, temperature)
    if conditions is not None and conditions.classes > 1 and torch.equal(draw(n, temperature, shift=1), drawn):
        raise _fail(label, "ignores its context: the same draws (same seed) for other class labels; expected samples of the labels' classes")
    return drawn


# --------------------------------------------------------------------------- losses


def _leaves(tensor: Tensor) -> list[Tensor]:
    """The leaf tensors requiring grad that ``tensor``'s autograd graph reaches."""
    found: dict[int, Tensor] = {}
    stack, seen = [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if isinstance(variable, Tensor):
            found[id(variable)] = variable
        stack.extend(next_node for next_node, _ in node.next_functions)
    return list(found.values())


def _tensors(value: Any) -> Iterator[Tensor]:
    """The tensors of an input: itself, or those of a list or tuple."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def check_loss(
    loss: Loss,
    inputs: Mapping[str, Any],
    terms: Collection[str] | None = None,
    *,
    grad_to: Mapping[str, Collection[str]] | None = None,
    seed: int = 0,
    label: str | None = None,
) -> dict[str, Tensor]:
    """Check a loss on ``inputs`` for ``terms`` (default: all its terms); returns its result.

    Make ``inputs`` as a player would, with gradients: e.g. ``fake`` from a generator
    whose parameters require grad, so each term's gradient has somewhere to go.
    ``grad_to`` names, per term, the inputs its gradient must reach, e.g.
    ``{"generator": ["fake"]}``: a generator term that detached ``fake`` still
    reaches the critic's parameters, which only this catches.
    """
    label = label or type(loss).__name__
    _core(label, check_loss_terms, loss)
    terms = tuple(loss.terms) if terms is None else tuple(terms)
    unknown = [t for t in terms if t not in loss.terms]
    if unknown:
        raise ValueError(f"{label} has no term {', '.join(map(repr, unknown))}; its terms are {tuple(loss.terms)}")
    with torch.enable_grad():
        with _seeded(seed):
            result = _loss_result(loss, inputs, terms, label)
        _check_term_gradients(loss, inputs, result, terms, label)
        for term, names in (grad_to or {}).items():
            _check_reaches(result[term], term, {name: inputs[name] for name in names}, label)
        for term in terms:
            needed = loss.inputs_for({term}, inputs)
            if needed != set(inputs):
                _check_term_inputs(loss, inputs, needed, term, seed, label)
    return result


def _check_term_inputs(loss: Loss, inputs: Mapping[str, Any], needed: set[str], term: str, seed: int, label: str) -> None:
    """``term`` computed from just its ``term_inputs`` has the value it has given every input (same seed)."""
    with _seeded(seed):
        full = _loss_result(loss, inputs, (term,), label)[term]
    with _seeded(seed):
        only = _loss_result(loss, {k: v for k, v in inputs.items() if k in needed}, (term,), f"{label} (term {term!r} given only its term_inputs {sorted(needed)})")[term]
    _close(label, f"term {term!r} given only its term_inputs {sorted(needed)} differs from its value given every input; "
           "expected term_inputs to list everything the term reads", only, full, ATOL, RTOL)


def _check_reaches(value: Tensor, term: str, targets: Mapping[str, Any], label: str) -> None:
    """``term``'s gradient reaches each of ``targets`` (named inputs)."""
    for name, target in targets.items():
        if not any(t.requires_grad for t in _tensors(target)):
            raise ValueError(f"{label}: grad_to names input {name!r} for term {term!r}, but it does not require grad")
        if not any(_reaches(value, t) for t in _tensors(target) if t.requires_grad):
            raise _fail(label, f"term {term!r} gets no gradient to input {name!r} (detached?); expected its player to be trained through it")


def _reaches(value: Tensor, target: Tensor) -> bool:
    """Whether ``value``'s gradient flows to ``target`` (a leaf or an intermediate result)."""
    if value.grad_fn is None:
        return False
    (grad,) = torch.autograd.grad(value, target, retain_graph=True, allow_unused=True)
    return grad is not None


def _loss_result(loss: Loss, inputs: Mapping[str, Any], terms: tuple[str, ...], label: str) -> dict[str, Tensor]:
    with _calling(label, f"forward(inputs {sorted(inputs)}, terms {sorted(terms)})"):
        result = loss(inputs, frozenset(terms))
    _core(label, check_loss_result, result, terms)
    for key, value in result.items():
        if not bool(torch.isfinite(value.detach()).all()):
            raise _fail(label, f"forward returned {key!r} = {value.item():g}; expected a finite value")
    return dict(result)


def _check_term_gradients(loss: Loss, inputs: Mapping[str, Any], result: dict[str, Tensor], terms: tuple[str, ...], label: str) -> None:
    """Each term's gradient reaches a parameter or input requiring grad, and is finite there."""
    sources = {id(p): f"parameter {n!r}" for n, p in loss.named_parameters()}
    sources |= {id(t): f"input {k!r}" for k, v in inputs.items() for t in _tensors(v)}
    wanted = [f"parameter {name!r}" for name, p in loss.named_parameters() if p.requires_grad]
    wanted += [f"input {k!r}" for k, v in inputs.items() if any(t.requires_grad for t in _tensors(v))]
    if not wanted:
        raise ValueError(f"{label}: no parameter of the loss and no input requires grad, so no gradient can be checked; "
                         "make the inputs as a player would (e.g. fake = generator(z) with its parameters)")
    for term in terms:
        value = result[term]
        if value.grad_fn is None:
            raise _fail(label, f"term {term!r} carries no gradient although {wanted[0]} requires grad (detached, or made with .item()?); "
                        "expected a term its player can minimise")
        leaves = _leaves(value)
        grads = torch.autograd.grad(value, leaves, retain_graph=True, allow_unused=True)
        for leaf, grad in zip(leaves, grads, strict=True):
            if grad is not None:
                _finite(label, f"the gradient of term {term!r} for {sources.get(id(leaf), f'a tensor of shape {_shape(leaf.shape)}')}", grad)


# --------------------------------------------------------------------------- metrics


def check_metric(
    metric: Callable[[EvalContext], Any], ctx: EvalContext, *, allow_nonfinite: Collection[str] = (), label: str | None = None
) -> dict[str, float]:
    """Check a metric on ``ctx`` (see the module docstring); returns its values as floats.

    Values must be finite unless their key is in ``allow_nonfinite``.
    """
    label = label or _name(metric)
    model = ctx.model if isinstance(ctx.model, nn.Module) else None
    state = {k: v.detach().clone() for k, v in model.state_dict().items()} if model is not None else {}
    modes = [m.training for m in model.modules()] if model is not None else []
    trainable = [p.requires_grad for p in model.parameters()] if model is not None else []
    data = {(split, k): v.clone() for split in ("train", "test") for k, v in getattr(ctx.data, split).fields.items()}
    with _calling(label, "the metric"):
        result = metric(ctx)
    values = _core(label, check_metric_result, result)
    bad = [f"{k}={v}" for k, v in values.items() if not math.isfinite(v) and k not in allow_nonfinite]
    if bad:
        raise _fail(label, f"returned non-finite {', '.join(bad)}; expected finite values (or list the key in allow_nonfinite)")
    changed = [f"{split} split's {k!r}" for (split, k), v in data.items() if not _same(getattr(ctx.data, split).fields[k], v)]
    if changed:
        raise _fail(label, f"changed the {changed[0]} in place; expected a metric to leave the data as it was (later metrics read it)")
    if model is not None:
        now = model.state_dict()
        changed = [k for k in now.keys() ^ state.keys()] + [k for k, v in now.items() if k in state and not _same(v, state[k])]
        if changed:
            raise _fail(label, f"changed the model's {changed[0]!r}; expected a metric to leave the model as it was")
        if [m.training for m in model.modules()] != modes:
            raise _fail(label, "changed the model's training mode; expected a metric to leave the model as it was")
        if [p.requires_grad for p in model.parameters()] != trainable:
            raise _fail(label, "changed which of the model's parameters require grad; expected a metric to leave the model as it was")
    return values
