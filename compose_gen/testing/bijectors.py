"""Conformance kit for bijectors: hypothesis strategies and one-call checks.

Conventions every bijector follows (the kit checks them):

* **Exact mode.** A bijector with ``stochastic_ladj = True`` returns an unbiased
  estimate of ``ladj`` in training mode and the exact value in eval mode: the
  exact mode *is* ``module.eval()``.  The outputs themselves, ``forward``'s ``y`` and ``inverse``'s
  ``x``, must not depend on the mode.
* **Context.** A bijector that takes a context sets ``context_shape`` (the event
  shape of the context, a ``torch.Size``); absent or ``None`` means it takes none.
* **Parameters are unconstrained.** Any real value of any parameter gives a valid
  bijector (constraints are enforced by reparametrisation), so the kit perturbs
  every parameter with Gaussian noise: zero-initialised layers are not identities.
* **Data-dependent initialisation** happens on the first ``forward`` call in
  training mode; the kit makes one such call on a warm-up batch first.
* **Examples.** Each bijector type declares small example parameters in its
  pydantic model (event sizes of at most ~16), as standard JSON-schema examples::

      class CouplingParams(Params):
          model_config = ConfigDict(json_schema_extra={"examples": [{"shape": [4], "hidden": [8]}]})

  Inline ``{type: ...}`` dicts in ``Ref`` fields of an example are built from the
  same catalogue.  A bijector type without examples fails the conformance suite.

Use it in one call, or through the pytest fixture of :mod:`compose_gen.testing.pytest_plugin`::

    from compose_gen.testing.bijectors import check_bijector, check_type

    check_bijector(MyBijector((4,)))                 # a bijector or a factory of them
    check_type(make_catalogue([my_plugin]), "mine")  # every example of a registered type

For random batch shapes (extra leading dimensions, none included) and seeds drawn
by hypothesis, :func:`check_case` perturbs the parameters, draws float64 inputs
``x`` in ``domain`` and ``y`` in ``codomain`` (``transform_to`` of Gaussian
noise ``u``, a random half of its elements ``WIDE_SCALE = 4`` times wider, so that
tails such as ``|x| > 4`` are reached; ``scale=s`` draws ``u ~ N(0, s²)`` instead)
and a Gaussian context, and asserts, in training mode and again in eval mode
(the mode of evaluation, ``log_prob`` and sampling), that

* outputs have the right shapes, dtype and device, are finite and ``y ∈ codomain``;
* ``inverse(forward(x)) ≈ x`` and ``forward(inverse(y)) ≈ y`` (a ``surjective``
  bijector, such as dequantization, is checked on ``inverse(forward(x)) == x`` for
  ``x`` on its discrete domain only);
* ``ladj`` of ``forward`` equals ``log|det ∂y/∂x|`` of the autograd Jacobian
  (event dimensions flattened), and ``inverse``'s is its negative at matching points;
* examples in a batch are independent: ``∂y_i/∂x_j = 0`` and ``∂ladj_i/∂x_j = 0`` for ``i ≠ j``;
* ``ladj`` carries the gradient of ``log|det J|``, towards the input and the
  parameters θ, of ``forward`` and of ``inverse`` (not a surjection's): along random
  directions ``v`` (of the unconstrained input ``u``) and ``w`` (of θ), autograd's
  ``⟨∂ladj/∂u, v⟩`` per example and ``⟨∂Σladj/∂θ, w⟩`` equal the central differences
  ``(ladj(u + εv) - ladj(u - εv)) / 2ε`` of its values (themselves checked against
  autograd's ``log|det J|``), so a ``ladj`` that is ``.detach()``-ed, or computed from
  ``x.detach()``, fails; its value with autograd on equals the one under
  ``torch.no_grad()``, where the values are checked.  Where the differences at ``ε = 1e-5, 1e-6, 1e-7`` differ
  among themselves (``ladj`` not smooth there: a ReLU's kink, a spline knot) and
  none matches, the example is not judged;
* the outputs carry their gradients, ``y`` of ``forward`` and ``x`` of ``inverse`` (the
  reparameterisation gradient of sampling), towards the input and θ, checked the same
  way on ``⟨r, y⟩`` and ``⟨r, x⟩`` per example along a random direction ``r``: a ``y`` cut
  from a parameter, or a ``.detach()``-ed inverse, fails (not a surjection's, whose ``y``
  is its input's bin plus noise and whose inverse is a projection);
* every parameter receives a finite gradient, and float32 gives float32 outputs
  that agree with float64, the forward's, the round trip through the inverse and
  both ``ladj`` (on the standard draws: in the tails, rounding the input
  to float32 alone can move the output beyond the tolerance, e.g. ``logit(1 - 1e-7)``);
* with ``stochastic_ladj``: the properties above hold in eval mode (exact), and
  the training-mode estimate averages, over ``stochastic_draws`` draws, to the
  exact eval-mode value within 5 standard errors (each element judged alone: a bias
  small against its spread passes), ``forward``'s ``y`` and ``inverse``'s ``x`` are the
  same in both modes (a flow posterior samples with the training-mode inverse), and in
  training mode both outputs carry their gradients and every parameter receives one.

Each property is checked in both modes because a layer may take another path in
eval mode (a cache, a fast path) that training never runs.  Data-dependent
initialisation (actnorm) is done by the warm-up call, before either mode.

A failure raises :class:`AssertionError` naming the bijector, the property, the
input (batch and event shape, dtype, device, seed) and the worst error and where.
Each case runs with one intra-op thread (tiny tensors; restored afterwards) and a
seeded global generator, so failures reproduce; the finite differences replay the
global generator's state for every call, so a layer drawing noise (dequantization)
sees the same noise at ``u ± εv``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

import torch

try:
    from hypothesis import HealthCheck, Phase, given, settings, strategies as st
except ModuleNotFoundError as error:  # an optional dependency of compose_gen
    raise ModuleNotFoundError("the bijector kit draws its cases with hypothesis: pip install 'compose-gen[testing]'") from error
from pydantic import ValidationError
from torch import Tensor, nn
from torch.autograd.functional import jacobian
from torch.distributions import constraints, transform_to

from compose_gen.core import ContractError
from compose_gen.core.bijector import Bijector, check_constructed, context_shape_problem
from compose_gen.registry import Catalogue, ComponentType
from compose_gen.testing.components._common import _seeded

__all__ = [
    "batch_shapes",
    "bijector_types",
    "build_examples",
    "check_bijector",
    "check_case",
    "check_type",
    "context_shape",
    "example_params",
    "seeds",
]

#: Size of the batch of the warm-up call that triggers data-dependent initialisation.
WARM_UP_BATCH = 8
#: Hypothesis cases per bijector (and per example of a registered type) unless told otherwise.
MAX_EXAMPLES = 8
#: Standard deviation of the wide half of the unconstrained draws (``scale=None``, the default).
WIDE_SCALE = 4.0
#: Step ``ε`` of the central differences of ``ladj`` (unconstrained input and parameter units).
DIFFERENCE_STEP = 1e-5
#: Tolerance of the gradient check, in units of the case's ``atol + rtol·|·|``: differences are approximate.
DIFFERENCE_TOLERANCE = 100.0


def batch_shapes(max_dims: int = 2, max_size: int = 3) -> st.SearchStrategy[tuple[int, ...]]:
    """Extra leading batch shapes: up to ``max_dims`` dimensions (none included) of size 1..``max_size``."""
    return st.lists(st.integers(1, max_size), max_size=max_dims).map(tuple)


def seeds() -> st.SearchStrategy[int]:
    """Seeds for the parameter perturbation, inputs and context of one case."""
    return st.integers(0, 2**31 - 1)


def context_shape(bijector: nn.Module) -> torch.Size | None:
    """The context event shape ``bijector`` or any of its submodules declares, or ``None``."""
    shapes = set()
    for module in bijector.modules():
        shape = getattr(module, "context_shape", None)
        if shape is None:
            continue
        problem = context_shape_problem(shape)
        if problem:
            raise TypeError(f"{type(module).__name__} {problem}")
        shapes.add(tuple(shape))
    return torch.Size(shapes.pop()) if shapes else None


@dataclass(frozen=True)
class _Case:
    """One input configuration, described in failure messages."""

    label: str
    batch_shape: tuple[int, ...]
    event_shape: tuple[int, ...]
    seed: int
    atol: float
    rtol: float
    mode: str = ""

    def in_mode(self, training: bool) -> _Case:
        """This case, its failures saying which mode the bijector was in."""
        return dataclasses.replace(self, mode=" in training mode" if training else " in eval mode")

    def fail(self, prop: str, detail: str, x: Tensor) -> AssertionError:
        return AssertionError(
            f"{self.label}: {prop} — broken{self.mode} on an input of batch shape {self.batch_shape} and event shape "
            f"{self.event_shape} ({x.dtype}, {x.device}, seed {self.seed}): {detail}"
        )

    def close(
        self, prop: str, actual: Tensor, expected: Tensor, x: Tensor, scale: float = 1.0, note: str = ""
    ) -> None:
        """Assert ``|actual - expected| <= scale·(atol + rtol·|expected|)`` elementwise; ``note`` ends the message."""
        if actual.shape != expected.shape:
            raise self.fail(prop, f"shape {tuple(actual.shape)}, expected {tuple(expected.shape)}", x)
        error = (actual.detach() - expected.detach()).abs().to(torch.float64)
        bad = ~(error <= scale * (self.atol + self.rtol * expected.detach().abs()))
        if bad.any():
            worst = torch.where(bad, error.nan_to_num(math.inf), -1.0).argmax()
            where = tuple(int(i) for i in torch.unravel_index(worst, error.shape))
            raise self.fail(
                prop,
                f"max error {error.max().item():.3g} at index {where} of shape {tuple(error.shape)} "
                f"(tolerance atol={scale * self.atol:g}, rtol={scale * self.rtol:g}){note}",
                x,
            )

    def check_output(self, prop: str, value: Tensor, shape: tuple[int, ...], like: Tensor) -> None:
        """Assert shape, dtype, device and finiteness of an output."""
        if tuple(value.shape) != tuple(shape):
            raise self.fail(prop, f"output shape {tuple(value.shape)}, expected {tuple(shape)}", like)
        if value.dtype != like.dtype or value.device != like.device:
            got, want = f"{value.dtype} on {value.device}", f"{like.dtype} on {like.device}"
            raise self.fail(prop, f"output is {got}, input {want}", like)
        if not torch.isfinite(value).all():
            raise self.fail(prop, f"{int((~torch.isfinite(value)).sum())} non-finite values in the output", like)


def _to(constraint: constraints.Constraint) -> Callable[[Tensor], Tensor]:
    """``transform_to(constraint)``: unconstrained noise to points of ``constraint``."""
    try:
        return transform_to(constraint)
    except NotImplementedError:
        raise ValueError(
            f"cannot draw points in {constraint}; register it with torch.distributions.transform_to"
        ) from None


def _draw(constraint: constraints.Constraint, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return _to(constraint)(torch.randn(shape, generator=generator, dtype=torch.float64))


def _noise(shape: tuple[int, ...], generator: torch.Generator, scale: float | None) -> tuple[Tensor, Tensor]:
    """Standard Gaussian noise and its widened version: ``scale ·`` it, or (``None``) a random half ``WIDE_SCALE ·`` it."""
    noise = torch.randn(shape, generator=generator, dtype=torch.float64)
    if scale is not None:
        return noise, scale * noise
    wide = torch.rand(shape, generator=generator, dtype=torch.float64) < 0.5
    return noise, torch.where(wide, WIDE_SCALE * noise, noise)


ContextMaker = Callable[[tuple[int, ...]], "Tensor | None"]


def _prepared(
    bijector: Bijector, generator: torch.Generator, noise: float, device: torch.device
) -> tuple[Bijector, ContextMaker]:
    """A float64 copy on ``device``, warmed up (data-dependent init) and with perturbed parameters; a context."""
    bijector = copy.deepcopy(bijector).to(device=device, dtype=torch.float64).train()
    shape = context_shape(bijector)

    def context_for(batch: tuple[int, ...]) -> Tensor | None:
        if shape is None:
            return None
        return torch.randn((*batch, *shape), generator=generator, dtype=torch.float64).to(device)

    with torch.no_grad():
        warm_up = _draw(bijector.domain, (WARM_UP_BATCH, *bijector.event_shape), generator).to(device)
        bijector(warm_up, context_for((WARM_UP_BATCH,)))
        for parameter in bijector.parameters():
            parameter.add_(noise * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype).to(device))
    return bijector, context_for


@contextlib.contextmanager
def _single_threaded() -> Iterator[None]:
    """Tiny tensors: intra-op threads only add overhead (tens of times on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def check_case(
    bijector: Bijector,
    batch_shape: tuple[int, ...],
    seed: int,
    *,
    device: torch.device | str | None = None,
    atol: float = 1e-6,
    rtol: float = 1e-6,
    param_noise: float = 0.1,
    stochastic_draws: int = 256,
    scale: float | None = None,
    label: str | None = None,
) -> None:
    """Check every conformance property of ``bijector`` on one batch shape and seed (see the module docstring).

    ``scale`` widens the inputs: ``x = transform_to(domain)(u)`` (``y`` likewise) with
    ``u ~ N(0, scale²)``; ``None`` (the default) draws a random half of the elements of
    ``u`` from ``N(0, WIDE_SCALE²)`` and the rest from ``N(0, 1)``; ``scale=1`` only
    standard draws.  float32 is compared with float64 on the standard draws.  A large
    ``scale`` tests numerics too: where ``ladj``'s values lose resolution (``log1p(-sigmoid(y))``
    for ``y ≳ 25`` moves in steps of ~1e-3), its differences see the steps, and the gradient
    check fails.
    """
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    device, batch_shape = torch.device(device or "cpu"), tuple(batch_shape)
    generator = torch.Generator().manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.init()  # started before the global generators, which stochastic estimators draw from, are seeded
    with _seeded(seed), _single_threaded():
        bij, context_for = _prepared(bijector, generator, param_noise, device)
        case = _Case(label or type(bijector).__name__, batch_shape, tuple(bij.event_shape), seed, atol, rtol)
        to_x, to_y = _to(bij.domain), _to(bij.codomain)
        standard, x_noise = (n.to(device) for n in _noise((*batch_shape, *bij.event_shape), generator, scale))
        x, x_standard = to_x(x_noise), to_x(standard)
        if bij.surjective:  # a surjection round-trips only on its discrete domain (the image of inverse), perturbed there
            x, x_standard = (bij.inverse(v, context_for(batch_shape))[0].detach() for v in (x, x_standard))
            to_x, x_noise = _to(constraints.real), x
        if scale == 1:
            x_standard = x
        y_noise = _noise((*batch_shape, *bij.out_event_shape), generator, scale)[1].to(device)
        y_drawn = to_y(y_noise)
        context = context_for(batch_shape)
        inputs = {"forward": (x_noise, to_x), "inverse": (y_noise, to_y)}
        if bij.event_shape.numel() != bij.out_event_shape.numel():
            raise case.fail("dimension preserved", f"out_event_shape {tuple(bij.out_event_shape)}", x)

        # Every property in both modes; a stochastic ladj only in eval mode, its exact mode, then its estimate.
        for training in (False,) if bij.stochastic_ladj else (True, False):
            bij.train(training)
            in_mode = case.in_mode(training)
            y, ladj, x_back = _check_round_trips(bij, x, y_drawn, context, in_mode)
            _check_jacobian(bij, x, context, ladj, in_mode)
            _check_derivatives(bij, inputs, context, generator, in_mode)
            with torch.no_grad():
                y_standard, ladj_standard = (y, ladj) if x_standard is x else bij(x_standard, context)
            _check_float32(bij, x_standard, context, y_standard, ladj_standard, in_mode)
            if not bij.stochastic_ladj:
                _check_gradients(bij, x, context, in_mode)
        if bij.stochastic_ladj:
            bij.train()
            in_training = case.in_mode(True)
            _check_expectation(bij, x, context, (y, ladj, x_back), stochastic_draws, in_training)
            _check_derivatives(bij, inputs, context, generator, in_training, outputs=("value",))  # a flow posterior samples so
            _check_gradients(bij, x, context, in_training)


def _check_round_trips(
    bij: Bijector, x: Tensor, y_drawn: Tensor, context: Tensor | None, case: _Case
) -> tuple[Tensor, Tensor, Tensor]:
    """Round trips and output shapes; ``y, ladj = forward(x)`` and ``inverse(y)``'s ``x``."""
    batch, out_shape = case.batch_shape, (*case.batch_shape, *bij.out_event_shape)
    with torch.no_grad():
        y, ladj = _pair(bij, "forward", x, context, case)
        case.check_output("forward(x) output y", y, out_shape, x)
        case.check_output("forward(x) output ladj", ladj, batch, x)
        if not bool(bij.codomain.check(y).all()):
            raise case.fail("forward(x) lies in the codomain", f"y outside {bij.codomain}", x)
        x_back, ladj_back = _pair(bij, "inverse", y, context, case)
        case.check_output("inverse(y) output x", x_back, x.shape, x)
        case.check_output("inverse(y) output ladj", ladj_back, batch, x)
        case.close("inverse(forward(x)) == x", x_back, x, x)
        case.close("inverse ladj == -forward ladj at y = forward(x)", ladj_back, -ladj, x)

        if bij.surjective:
            return y, ladj, x_back
        x_drawn, ladj_drawn = _pair(bij, "inverse", y_drawn, context, case)
        case.check_output("inverse(y) output x, y drawn in the codomain", x_drawn, x.shape, y_drawn)
        y_back, ladj_forward = _pair(bij, "forward", x_drawn, context, case)
        case.close("forward(inverse(y)) == y", y_back, y_drawn, y_drawn)
        case.close("forward ladj == -inverse ladj at x = inverse(y)", ladj_forward, -ladj_drawn, y_drawn)
    return y, ladj, x_back


def _pair(bij: Bijector, method: str, value: Tensor, context: Tensor | None, case: _Case) -> tuple[Tensor, Tensor]:
    """``bij.forward`` or ``bij.inverse`` of ``value``, failing as the contract does unless it is a pair ``(y, ladj)``."""
    out = bij(value, context) if method == "forward" else bij.inverse(value, context)
    try:
        bij.check_output(method, value, out)
    except ContractError as error:
        raise case.fail(f"{method} returns the pair (y, ladj)", str(error), value) from None
    return out


def _check_jacobian(bij: Bijector, x: Tensor, context: Tensor | None, ladj: Tensor, case: _Case) -> None:
    n, d = math.prod(case.batch_shape), bij.event_shape.numel()

    def flat(v: Tensor) -> tuple[Tensor, Tensor]:
        y, ladj = bij(v.reshape(x.shape), context)
        return y.reshape(n, d), ladj.reshape(n)

    with torch.enable_grad():
        try:  # backward passes batched by vmap: several times faster
            jac_y, jac_ladj = jacobian(flat, x.detach().reshape(n, d), vectorize=True)  # (n, d, n, d), (n, n, d)
        except RuntimeError:  # an operation vmap cannot batch: one backward pass per output
            jac_y, jac_ladj = jacobian(flat, x.detach().reshape(n, d))
    blocks = jac_y.diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (n, d, d): ∂y_i/∂x_i
    log_det = torch.linalg.slogdet(blocks).logabsdet.reshape(ladj.shape)
    case.close("forward ladj == log|det J| of the autograd Jacobian", ladj, log_det, x)
    # largest |∂y_i/∂x_j| and |∂ladj_i/∂x_j| per pair (i, j) of flattened batch indices, i ≠ j
    others = ~torch.eye(n, dtype=torch.bool, device=x.device)
    for name, cross in (("y", jac_y.abs().amax((1, 3))), ("ladj", jac_ladj.abs().amax(2))):
        prop = f"examples in a batch are independent (∂{name}_i/∂x_j = 0, i ≠ j)"
        case.close(prop, cross * others, torch.zeros_like(cross), x)


def _replayer(device: torch.device) -> Callable[[], None]:
    """A function that puts the global generator(s) back in their present state: common random numbers."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def replay() -> None:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)

    return replay


#: What :func:`_check_gradient_of` differentiates: a direction's ladj, or its output (``y`` forward, ``x`` inverse).
Output = Literal["ladj", "value"]


def _check_derivatives(
    bij: Bijector,
    inputs: dict[str, tuple[Tensor, Callable[[Tensor], Tensor]]],
    context: Tensor | None,
    generator: torch.Generator,
    case: _Case,
    outputs: tuple[Output, ...] = ("ladj", "value"),
) -> None:
    """Each of ``outputs`` of forward and inverse, at ``to_value(noise)`` for ``inputs[method] = (noise, to_value)``,
    carries its gradient (:func:`_check_gradient_of`).

    A surjection's forward ladj alone: its inverse projects (no log-determinant, a piecewise-constant ``x``), and
    its forward's ``y`` is the input's bin plus noise, whose values do not move with the input its gradient follows.
    """
    for output in outputs:
        for method, (noise, to_value) in inputs.items():
            if not bij.surjective or (method, output) == ("forward", "ladj"):
                _check_gradient_of(bij, method, output, noise, to_value, context, generator, case)


def _check_gradient_of(
    bij: Bijector,
    method: str,
    output: Output,
    noise: Tensor,
    to_value: Callable[[Tensor], Tensor],
    context: Tensor | None,
    generator: torch.Generator,
    case: _Case,
) -> None:
    """``output`` of ``method`` at ``to_value(noise)`` carries the derivative of its values towards the input and θ.

    ``output`` is ``"ladj"``, or ``"value"``: ``y`` of forward, ``x`` of inverse (the reparameterisation gradient a
    flow samples with), read as ``⟨r, ·⟩`` per example along a random ``r``.  Autograd's directional derivatives
    along random ``v`` (of ``noise``) and ``w`` (of θ) against central differences
    ``D(ε) = (q(· + εv) - q(· - εv)) / 2ε`` of that quantity ``q`` (:func:`_derivative_agrees`): first along
    ``(v, w)`` together, summed over the batch (two calls); a mismatch is then located, along ``v`` per
    example or along ``w``.  For ladj, its values being ``log|det J|`` (checked elsewhere), this is
    ``∂ladj = ∂ log|det J|`` without second derivatives of the map, which autograd does not have right for a
    layer solved by bisection and one Newton step (planar's forward): differentiating the autograd
    ``log|det J|`` would fail it.
    """
    towards = "x" if method == "forward" else "y"
    name = output if output == "ladj" else ("y" if method == "forward" else "x")
    parameters = [p for p in bij.parameters() if p.requires_grad]
    saved, training, replay = [p.detach().clone() for p in parameters], bij.training, _replayer(noise.device)
    v = torch.randn(noise.shape, generator=generator, dtype=noise.dtype).to(noise.device)
    w = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in parameters]
    out_event = bij.out_event_shape if method == "forward" else bij.event_shape
    if output == "value":
        r = torch.randn((*case.batch_shape, *out_event), generator=generator, dtype=noise.dtype).to(noise.device)

    def quantity_at(u: Tensor) -> Tensor:
        """The quantity ``q`` at ``u``: ladj, or ``⟨r, value⟩`` per example."""
        replay()  # the same noise in every call, for a layer that draws some
        value = to_value(u)
        result = bij(value, context) if method == "forward" else bij.inverse(value, context)
        return result[1] if output == "ladj" else (result[0] * r).reshape(*case.batch_shape, -1).sum(-1)

    def move(step: float) -> None:
        """θ = θ₀ + step·w."""
        bij.train()  # parameters change in training mode: an eval-mode cache is rebuilt on .eval()
        for parameter, original, direction in zip(parameters, saved, w, strict=True):
            parameter.copy_(original + step * direction if step else original)
        bij.train(training)

    def difference(along_u: bool, along_theta: bool, summed: bool) -> Callable[[float], Tensor]:
        """``D(ε)`` along ``v``, ``w`` or both, per example or summed over the batch."""

        def central(step: float) -> Tensor:
            ends = []
            for end in (step, -step):
                if along_theta:
                    move(end)
                ends.append(quantity_at(noise + end * v if along_u else noise))
            derivative = (ends[0] - ends[1]) / (2 * step)
            return derivative.sum() if summed else derivative

        return central

    point = noise.detach().clone().requires_grad_()
    with torch.enable_grad():
        quantity = quantity_at(point)
        inputs = [point, *parameters]
        grads = torch.autograd.grad(quantity.sum(), inputs, allow_unused=True) if quantity.requires_grad else [None] * len(inputs)
    grad_u, *grad_theta = (torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs, strict=True))
    value = to_value(noise)
    claim = "∂ log|det J|" if output == "ladj" else f"∂{name}"
    prop = f"{method} {name}'s gradient towards {{}} == {claim}/∂{{}}"
    with torch.no_grad():  # where the values were checked: a "fast path" taken with autograd off must agree with training's
        case.close(f"{method} {name} with autograd on == under torch.no_grad()", quantity, quantity_at(noise), value)
    try:
        with torch.no_grad():
            along_v = (grad_u * v).reshape(*case.batch_shape, -1).sum(-1)
            along_w = sum(((g * d).sum() for g, d in zip(grad_theta, w, strict=True)), noise.new_zeros(()))
            joint = difference(True, bool(parameters), summed=True)
            if _derivative_agrees(case, "", along_v.sum() + along_w, joint, value, name):
                return
            only_u = difference(True, False, summed=False)
            _derivative_agrees(case, prop.format(towards, towards), along_v, only_u, value, name, fail=True)
            if parameters:
                only_theta = difference(False, True, summed=True)
                _derivative_agrees(case, prop.format("the parameters", "θ"), along_w, only_theta, value, name, fail=True)
            both = prop.format(f"{towards} and θ", f"({towards}, θ)")
            _derivative_agrees(case, both, along_v.sum() + along_w, joint, value, name, fail=True)
    finally:
        with torch.no_grad():
            move(0.0)


def _derivative_agrees(
    case: _Case,
    prop: str,
    autograd: Tensor,
    central: Callable[[float], Tensor],
    value: Tensor,
    name: str = "ladj",
    fail: bool = False,
) -> bool:
    """Whether ``autograd`` agrees with the central differences ``central(step)`` of ``name``; else raise if ``fail``.

    An element agrees when the differences at one of the steps ``ε, ε/10, ε/100`` do (a kink within a step,
    such as a ReLU's or a spline knot, spoils the larger steps only), or when they differ among themselves by
    more than the tolerance (``name`` is not smooth, or not precise enough, there to tell): only a derivative
    that every step agrees on, and autograd misses, fails.
    """

    def tolerance(expected: Tensor) -> Tensor:
        return DIFFERENCE_TOLERANCE * (case.atol + case.rtol * expected.abs())

    differences, agrees = [], torch.zeros(autograd.shape, dtype=torch.bool, device=autograd.device)
    for step in (DIFFERENCE_STEP, DIFFERENCE_STEP / 10, DIFFERENCE_STEP / 100):
        differences.append(central(step))
        agrees |= (autograd - differences[-1]).abs() <= tolerance(differences[-1])
        if agrees.all():
            return True
    stacked, expected = torch.stack(differences), differences[0]
    differs = ~agrees & ((stacked.amax(0) - stacked.amin(0)) <= tolerance(expected))  # False where not finite
    if not differs.any():
        return True
    if fail:
        note = " between autograd and central differences along a random direction"
        if not (differs & (autograd != 0)).any():
            note += f"; autograd's are 0: {name} is cut from the graph (.detach(), no_grad, computed from an input's .detach())"
        case.close(prop, torch.where(differs, autograd, expected), expected, value, DIFFERENCE_TOLERANCE, note)
    return False


def _check_float32(bij: Bijector, x: Tensor, context: Tensor | None, y: Tensor, ladj: Tensor, case: _Case) -> None:
    single = copy.deepcopy(bij).float()
    x32 = x.float()
    context32 = None if context is None else context.float()
    with torch.no_grad():
        y32, ladj32 = single(x32, context32)
        case.check_output("float32 forward output y", y32, y.shape, x32)
        case.check_output("float32 forward output ladj", ladj32, ladj.shape, x32)
        x_back, ladj_back = single.inverse(y32, context32)
        case.check_output("float32 inverse output x", x_back, x.shape, x32)
    scale = 1e-3 / max(case.atol, case.rtol)
    # the inverse, which a flow samples with, in float32 too: the round trip (for a surjection, whose forward draws
    # fresh noise, the one comparison it has)
    case.close("float32 inverse(forward(x)) agrees with float64", x_back.double(), x, x32, scale)
    if not bij.surjective:
        case.close("float32 forward agrees with float64", y32.double(), y, x32, scale)
        case.close("float32 inverse ladj agrees with float64", ladj_back.double(), -ladj, x32, scale)
    case.close("float32 forward ladj agrees with float64", ladj32.double(), ladj, x32, scale)


def _check_expectation(
    bij: Bijector, x: Tensor, context: Tensor | None, evaluated: tuple[Tensor, Tensor, Tensor], draws: int, case: _Case
) -> None:
    """In training mode, ``draws`` calls on copies of ``x`` and ``y``: the outputs are eval mode's (``evaluated``:
    ``y, ladj = forward(x)`` and ``inverse(y)``'s ``x``), and the ladj estimates average to the exact values."""
    y, ladj, x_back = evaluated
    context = None if context is None else context.expand(draws, *context.shape)
    with torch.no_grad():
        y_train, estimates = bij(x.expand(draws, *x.shape), context)
        x_train, inverse_estimates = bij.inverse(y.expand(draws, *y.shape), context)
    # a flow samples with the training-mode inverse too: a posterior flow's layers in a VAE's training step
    for prop, trained, exact in (("forward(x)", y_train, y), ("inverse(y)", x_train, x_back)):
        case.close(f"{prop} is the same in training and eval mode", trained, exact.expand_as(trained), x)
    for name, values, exact in (("forward", estimates, ladj), ("inverse", inverse_estimates, -ladj)):
        error = values.std(0) / math.sqrt(draws)
        tolerance = 5 * error + case.atol + case.rtol * exact.abs()
        bad = (values.mean(0) - exact).abs() > tolerance
        if bad.any():
            raise case.fail(
                f"E[stochastic {name} ladj] == exact {name} ladj",
                f"mean of {draws} draws {_floats(values.mean(0)[bad])} vs exact {_floats(exact[bad])} "
                f"(5 standard errors: {_floats(5 * error[bad])})",
                x,
            )


def _floats(values: Tensor) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values.flatten().tolist()[:6]) + "]"


def _check_gradients(bij: Bijector, x: Tensor, context: Tensor | None, case: _Case) -> None:
    if not any(p.requires_grad for p in bij.parameters()):
        return
    bij.zero_grad(set_to_none=True)
    y, ladj = bij(x, context)
    (y.square().sum() + ladj.sum()).backward()
    for name, parameter in bij.named_parameters():
        if parameter.requires_grad and parameter.grad is None:
            raise case.fail("every parameter receives a gradient", f"parameter {name!r} got none from forward", x)
        if parameter.grad is not None and not torch.isfinite(parameter.grad).all():
            raise case.fail("every parameter receives a gradient", f"parameter {name!r} got a non-finite gradient", x)


def check_bijector(
    bijector: Bijector | Callable[[], Bijector],
    *,
    max_examples: int = MAX_EXAMPLES,
    shapes: st.SearchStrategy[tuple[int, ...]] | None = None,
    **options: Any,
) -> None:
    """Check ``bijector`` (or the bijector a factory makes) on ``max_examples`` hypothesis cases.

    ``options`` go to :func:`check_case` (``device``, ``atol``, ``rtol``,
    ``param_noise``, ``stochastic_draws``, ``scale``, ``label``).  Runs are derandomised, so
    a failure reproduces, and not shrunk: the first failure is reported.
    """
    if not isinstance(bijector, nn.Module):
        bijector = bijector()
    if not isinstance(bijector, Bijector):
        raise TypeError(f"check_bijector needs a compose_gen.Bijector, got {type(bijector).__name__}")
    try:
        check_constructed(bijector)
    except ContractError as error:  # named as every other failure of the kit is
        raise ContractError(f"{options.get('label') or type(bijector).__name__}: {error}") from None

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=(Phase.explicit, Phase.generate),  # no shrinking: failure messages already name the input
        suppress_health_check=list(HealthCheck),
    )
    @given(batch_shape=shapes or batch_shapes(), seed=seeds())
    def conformance(batch_shape: tuple[int, ...], seed: int) -> None:
        check_case(bijector, batch_shape, seed, **options)

    conformance()


def example_params(component_type: ComponentType) -> list[dict[str, Any]]:
    """The example parameters a type declares as ``json_schema_extra={"examples": [...]}``."""
    extra = component_type.params.model_config.get("json_schema_extra")
    return list(extra.get("examples", [])) if isinstance(extra, dict) else []


class _ExampleContext:
    """A build context for examples: inline ``{type: ...}`` references are built from the catalogue."""

    data = None

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    def component(self, ref: str | dict[str, Any]) -> Any:
        if not isinstance(ref, dict):
            raise ValueError(f"example parameters must define referenced components inline, not by name {ref!r}")
        params = dict(ref)
        name = params.pop("type", None)
        if name not in self.catalogue:
            raise ValueError(self.catalogue.unknown_type_message(str(name), ("bijector", "network", "prior", "flow")))
        component_type = self.catalogue.get(name)
        return component_type.build(component_type.params.model_validate(params), self)

    def loss(self, name: str) -> Any:
        raise ValueError(f"example parameters cannot refer to losses ({name!r})")


def build_examples(catalogue: Catalogue, type_name: str, seed: int = 0) -> list[tuple[str, Bijector]]:
    """``(label, bijector)`` for every example of the registered bijector type ``type_name``."""
    if type_name not in catalogue or catalogue.get(type_name).kind != "bijector":
        # not a bare KeyError: the plugin that registers it may have failed to load, or registered it under another kind
        kind = f" (it is a {catalogue.get(type_name).kind} type)" if type_name in catalogue else ""
        raise AssertionError(f"{catalogue.unknown_type_message(type_name, ('bijector',))}{kind}")
    component_type = catalogue.get(type_name)
    examples = example_params(component_type)
    if not examples:
        raise AssertionError(
            f"bijector type {type_name!r} declares no example parameters: add "
            f"model_config = ConfigDict(json_schema_extra={{'examples': [...]}}) to {component_type.params.__name__}"
        )
    built = []
    with _seeded(seed):
        for i, params in enumerate(examples):
            label = f"{type_name} example {i} {params}"
            try:
                bijector = component_type.build(component_type.params.model_validate(params), _ExampleContext(catalogue))
            except ValidationError as error:
                raise AssertionError(f"{label}: invalid example parameters: {error}") from error
            except Exception as error:
                raise AssertionError(f"{label}: build raised {type(error).__name__}: {error}") from error
            if not isinstance(bijector, Bijector):
                raise AssertionError(f"{label}: build returned {type(bijector).__name__}, not a Bijector")
            built.append((label, bijector))
    return built


def check_type(catalogue: Catalogue, type_name: str, **options: Any) -> None:
    """Run :func:`check_bijector` on every example of a registered bijector type."""
    for label, bijector in build_examples(catalogue, type_name):
        check_bijector(bijector, label=label, **options)


def bijector_types(catalogue: Catalogue) -> list[str]:
    """Names of the catalogue's bijector types, sorted (for ``pytest.mark.parametrize``).

    Raises ``ValueError`` when a plugin of the catalogue failed to load or lost a type to a clash: its bijector types
    are missing from the list, and ``parametrize`` over a list without them (or over none: a skipped test) would pass.
    """
    if catalogue.failures:
        problems = "; ".join(f"{plugin!r}: {problem}" for plugin, problem in sorted(catalogue.failures.items()))
        raise ValueError(f"plugins failed to load or lost types, so their bijector types cannot be listed: {problems}")
    return sorted(t.name for t in catalogue.of_kind("bijector"))
