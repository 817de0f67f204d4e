"""Conformance kit for bijectors: hypothesis strategies and one-call checks.

Conventions every bijector follows (the kit checks them):

* **Exact mode.** A bijector with ``stochastic_ladj = True`` returns an unbiased
  estimate of ``ladj`` in training mode and the exact value in eval mode: the
  exact mode *is* ``module.eval()``.  ``y`` itself must not depend on the mode.
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
noise) and a Gaussian context, and asserts that

* outputs have the right shapes, dtype and device, are finite and ``y ∈ codomain``;
* ``inverse(forward(x)) ≈ x`` and ``forward(inverse(y)) ≈ y`` (a ``surjective``
  bijector, such as dequantization, is checked on ``inverse(forward(x)) == x`` for
  ``x`` on its discrete domain only);
* ``ladj`` of ``forward`` equals ``log|det ∂y/∂x|`` of the autograd Jacobian
  (event dimensions flattened), and ``inverse``'s is its negative at matching points;
* examples in a batch are independent: ``∂y_i/∂x_j = 0`` and ``∂ladj_i/∂x_j = 0`` for ``i ≠ j``;
* every parameter receives a finite gradient, and float32 gives float32 outputs
  that agree with float64;
* with ``stochastic_ladj``: the training-mode estimate averages, over
  ``stochastic_draws`` draws, to the exact eval-mode value within 5 standard
  errors, and ``y`` is the same in both modes.

A failure raises :class:`AssertionError` naming the bijector, the property, the
input (batch and event shape, dtype, device, seed) and the worst error and where.
Each case runs with one intra-op thread (tiny tensors; restored afterwards) and a
seeded global generator, so failures reproduce.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

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
from compose_gen.core.bijector import Bijector
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


def batch_shapes(max_dims: int = 2, max_size: int = 3) -> st.SearchStrategy[tuple[int, ...]]:
    """Extra leading batch shapes: up to ``max_dims`` dimensions (none included) of size 1..``max_size``."""
    return st.lists(st.integers(1, max_size), max_size=max_dims).map(tuple)


def seeds() -> st.SearchStrategy[int]:
    """Seeds for the parameter perturbation, inputs and context of one case."""
    return st.integers(0, 2**31 - 1)


def context_shape(bijector: nn.Module) -> torch.Size | None:
    """The context event shape ``bijector`` or any of its submodules declares, or ``None``."""
    shapes = {getattr(m, "context_shape", None) for m in bijector.modules()} - {None}
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

    def fail(self, prop: str, detail: str, x: Tensor) -> AssertionError:
        return AssertionError(
            f"{self.label}: {prop} — broken on an input of batch shape {self.batch_shape} and event shape "
            f"{self.event_shape} ({x.dtype}, {x.device}, seed {self.seed}): {detail}"
        )

    def close(self, prop: str, actual: Tensor, expected: Tensor, x: Tensor, scale: float = 1.0) -> None:
        """Assert ``|actual - expected| <= scale·(atol + rtol·|expected|)`` elementwise."""
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
                f"(tolerance atol={scale * self.atol:g}, rtol={scale * self.rtol:g})",
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


def _draw(constraint: constraints.Constraint, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    noise = torch.randn(shape, generator=generator, dtype=torch.float64)
    try:
        return transform_to(constraint)(noise)
    except NotImplementedError:
        raise ValueError(
            f"cannot draw points in {constraint}; register it with torch.distributions.transform_to"
        ) from None


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
    label: str | None = None,
) -> None:
    """Check every conformance property of ``bijector`` on one batch shape and seed (see the module docstring)."""
    device, batch_shape = torch.device(device or "cpu"), tuple(batch_shape)
    generator = torch.Generator().manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.init()  # started before the global generators, which stochastic estimators draw from, are seeded
    with _seeded(seed), _single_threaded():
        bij, context_for = _prepared(bijector, generator, param_noise, device)
        case = _Case(label or type(bijector).__name__, batch_shape, tuple(bij.event_shape), seed, atol, rtol)
        x = _draw(bij.domain, (*batch_shape, *bij.event_shape), generator).to(device)
        if bij.surjective:  # a surjection round-trips only on its discrete domain: the image of inverse
            x = bij.inverse(x, context_for(batch_shape))[0]
        y_drawn = _draw(bij.codomain, (*batch_shape, *bij.out_event_shape), generator).to(device)
        context = context_for(batch_shape)
        if bij.event_shape.numel() != bij.out_event_shape.numel():
            raise case.fail("dimension preserved", f"out_event_shape {tuple(bij.out_event_shape)}", x)

        bij.train(not bij.stochastic_ladj)  # eval is the exact mode
        y, ladj = _check_round_trips(bij, x, y_drawn, context, case)
        _check_jacobian(bij, x, context, ladj, case)
        _check_float32(bij, x, context, y, ladj, case)
        bij.train()
        if bij.stochastic_ladj:
            _check_expectation(bij, x, context, y, ladj, stochastic_draws, case)
        _check_gradients(bij, x, context, case)


def _check_round_trips(
    bij: Bijector, x: Tensor, y_drawn: Tensor, context: Tensor | None, case: _Case
) -> tuple[Tensor, Tensor]:
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
            return y, ladj
        x_drawn, ladj_drawn = _pair(bij, "inverse", y_drawn, context, case)
        case.check_output("inverse(y) output x, y drawn in the codomain", x_drawn, x.shape, y_drawn)
        y_back, ladj_forward = _pair(bij, "forward", x_drawn, context, case)
        case.close("forward(inverse(y)) == y", y_back, y_drawn, y_drawn)
        case.close("forward ladj == -inverse ladj at x = inverse(y)", ladj_forward, -ladj_drawn, y_drawn)
    return y, ladj


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
        jac_y, jac_ladj = jacobian(flat, x.detach().reshape(n, d))  # (n, d, n, d), (n, n, d)
    blocks = jac_y.diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (n, d, d): ∂y_i/∂x_i
    log_det = torch.linalg.slogdet(blocks).logabsdet.reshape(ladj.shape)
    case.close("forward ladj == log|det J| of the autograd Jacobian", ladj, log_det, x)
    # largest |∂y_i/∂x_j| and |∂ladj_i/∂x_j| per pair (i, j) of flattened batch indices, i ≠ j
    others = ~torch.eye(n, dtype=torch.bool, device=x.device)
    for name, cross in (("y", jac_y.abs().amax((1, 3))), ("ladj", jac_ladj.abs().amax(2))):
        prop = f"examples in a batch are independent (∂{name}_i/∂x_j = 0, i ≠ j)"
        case.close(prop, cross * others, torch.zeros_like(cross), x)


def _check_float32(bij: Bijector, x: Tensor, context: Tensor | None, y: Tensor, ladj: Tensor, case: _Case) -> None:
    single = copy.deepcopy(bij).float()
    x32 = x.float()
    context32 = None if context is None else context.float()
    with torch.no_grad():
        y32, ladj32 = single(x32, context32)
        case.check_output("float32 forward output y", y32, y.shape, x32)
        case.check_output("float32 forward output ladj", ladj32, ladj.shape, x32)
        x_back, _ = single.inverse(y32, context32)
        case.check_output("float32 inverse output x", x_back, x.shape, x32)
    scale = 1e-3 / max(case.atol, case.rtol)
    if bij.surjective:  # forward draws fresh noise: compare the round trip instead
        case.close("float32 inverse(forward(x)) agrees with float64", x_back.double(), x, x32, scale)
    else:
        case.close("float32 forward agrees with float64", y32.double(), y, x32, scale)
    case.close("float32 forward ladj agrees with float64", ladj32.double(), ladj, x32, scale)


def _check_expectation(
    bij: Bijector, x: Tensor, context: Tensor | None, y: Tensor, ladj: Tensor, draws: int, case: _Case
) -> None:
    repeat = (draws, *x.shape)
    context = None if context is None else context.expand(draws, *context.shape)
    with torch.no_grad():
        y_train, estimates = bij(x.expand(repeat), context)
        _, inverse_estimates = bij.inverse(y.expand(draws, *y.shape), context)
    case.close("forward(x) is the same in training and eval mode", y_train[0], y, x)
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
    ``param_noise``, ``stochastic_draws``, ``label``).  Runs are derandomised, so
    a failure reproduces, and not shrunk: the first failure is reported.
    """
    if not isinstance(bijector, nn.Module):
        bijector = bijector()
    if not isinstance(bijector, Bijector):
        raise TypeError(f"check_bijector needs a compose_gen.Bijector, got {type(bijector).__name__}")

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
    """Names of the catalogue's bijector types, sorted (for ``pytest.mark.parametrize``)."""
    return sorted(t.name for t in catalogue.of_kind("bijector"))
