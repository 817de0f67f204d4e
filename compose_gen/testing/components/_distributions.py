"""Checks of distribution modules: priors, encoders and decoders."""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from compose_gen.core.contracts import ContractError, check_distribution, check_graph_methods, describe_value
from compose_gen.testing.components._common import ATOL, RTOL, _calling, _close, _core, _fail, _finite, _seeded, _shape


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
            if grad is None:  # it shapes log_prob (checked above), so it shapes the draws: a detached scale, say
                raise _fail(call.label, f"parameter {name!r} gets no gradient from rsample's draws, though it shapes log_prob; "
                            "expected reparameterised draws to carry gradients to every parameter (a detach in rsample?)")
            _finite(call.label, f"the gradient of rsample for parameter {name!r}", grad)


def check_prior(
    prior: nn.Module, context: Tensor | None = None, *, temperature: float = 0.5, n: int = 3, **options: Any
) -> Distribution:
    """:func:`check_distribution_module` on ``prior()`` (or ``prior(context)``), then its temperature and graph methods."""
    label = options.pop("label", None) or type(prior).__name__
    try:
        check_graph_methods(prior)
    except ContractError as error:
        raise _fail(label, str(error)) from None
    dist = check_distribution_module(prior, None, context, given_name="", label=label, **options)
    with _seeded(options.get("seed", 0)), torch.no_grad():
        call = _Caller(_perturbed(prior, options.get("param_noise", 0.1)), label, None)
        tempered = _check_temperature(call, context, temperature, dist)
        if context is None:
            _check_graph_methods(call.module, label, n, temperature if tempered else 1.0, tuple(dist.event_shape))
    return dist


#: Draws at the kit's temperature and at 1 whose spreads :func:`_check_temperature` compares.
SPREAD_DRAWS = 1024
#: Draws at temperature 0 (a mixture's modes, one per component drawn) whose density at 1 it checks.
MODE_DRAWS = 64


def _check_temperature(call: _Caller, context: Tensor | None, temperature: float, dist: Distribution) -> bool:
    """``forward(temperature=T)`` gives a distribution of the same event shape, another one than at 1 (its
    ``log_prob`` differs), whose spread T < 1 does not widen (nor T > 1 narrow), and at T = 0 finite draws of its mode
    (which ``compose-gen sample --temperature 0`` asks for): on average at least as probable at 1 as its draws at 1.  False for a prior without a temperature (uniform codes),
    which refuses one other than 1 with ``ValueError``; its draws are then checked at 1 only."""
    try:
        cooled = call(None, context, temperature=temperature)
    except ContractError as error:
        if isinstance(error.__cause__, ValueError) and temperature != 1:
            return False
        raise
    if cooled.event_shape != dist.event_shape:
        raise _fail(call.label, f"at temperature {temperature} the event shape is {_shape(cooled.event_shape)}, expected {_shape(dist.event_shape)}")
    hot = call(None, context)
    state = torch.get_rng_state()
    at_one = hot.sample((SPREAD_DRAWS,))
    torch.set_rng_state(state)
    at_temperature = cooled.sample((SPREAD_DRAWS,))
    if torch.equal(at_temperature, at_one) and torch.equal(cooled.log_prob(at_one[:64]), hot.log_prob(at_one[:64])):
        raise _fail(call.label, f"ignores its temperature: at temperature {temperature} the same draws as at 1 (same seed) and the "
                    "same log_prob; expected the temperature to scale the spread")
    ratio = float(at_temperature.double().var(0).sum() / at_one.double().var(0).sum().clamp_min(1e-12))
    if (temperature < 1 and ratio > 1.1) or (temperature > 1 and ratio < 1 / 1.1):
        raise _fail(call.label, f"at temperature {temperature} its draws spread {ratio:.3g} times as much as at 1; expected the "
                    "temperature to scale the spread, σ·T: narrower below 1, wider above")
    with _calling(call.label, "forward(temperature=0.0)"):
        modes = call(None, context, temperature=0.0).sample((MODE_DRAWS,))
    _finite(call.label, "draws at temperature 0 (build the distribution with validate_args=False, which lets a scale be 0)", modes)
    at_mode, typical = float(hot.log_prob(modes).double().mean()), float(hot.log_prob(at_one).double().mean())
    if at_mode < typical:
        raise _fail(call.label, f"its draws at temperature 0 are no mode: their mean log_prob at 1 is {at_mode:.4g}, below the "
                    f"{typical:.4g} of its own draws at 1; expected T = 0 to give the most probable z (a temperature that moves "
                    "the distribution rather than scaling its spread?)")
    return True


def _check_graph_methods(prior: nn.Module, label: str, n: int, temperature: float, event: tuple[int, ...]) -> None:
    """``sample``/``rsample`` in ``graph_methods`` draw ``(n, *event)`` for a count or a tensor of ``n`` rows, at the temperature;
    ``rsample``'s draws carry gradients to the parameters."""
    for method in ("sample", "rsample"):
        if method not in getattr(prior, "graph_methods", ()):
            continue
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
    with _seeded(0), _calling(label, f"{method}({shown}, temperature={temperature})"):
        return getattr(prior, method)(like, temperature=temperature)


def check_encoder(encoder: nn.Module, x: Tensor, context: Tensor | None = None, **options: Any) -> Distribution:
    """:func:`check_distribution_module` for q(z|x) (or q(z|x, c)): ``x`` of shape ``(n, *event)``."""
    return check_distribution_module(encoder, x, context, given_name="x", **options)


def check_decoder(decoder: nn.Module, z: Tensor, context: Tensor | None = None, **options: Any) -> Distribution:
    """:func:`check_distribution_module` for p(x|z) (or p(x|z, c)): ``z`` of shape ``(n, *latent_event)``."""
    return check_distribution_module(decoder, z, context, given_name="z", **options)

