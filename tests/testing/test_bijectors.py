"""The conformance kit catches broken bijectors and says which property broke on what input."""

from __future__ import annotations

import math
import re

import pytest
import torch
from pydantic import ConfigDict
from torch import nn

from compose_gen import Bijector, ComponentType, Params, Ref, hookimpl, make_catalogue
from compose_gen.core import ContractError
from compose_gen.core.bijector import check_constructed
from compose_gen.testing.bijectors import bijector_types, build_examples, check_bijector, check_case, check_type
from compose_gen.testing.plugins import plugin
from compose_gen_plugins.flows import elementwise
from compose_gen_plugins.flows.elementwise import Inverse


class Scale(Bijector):
    """A correct bijector, y = x·exp(s); the planted bugs below break one property each."""

    def __init__(self) -> None:
        super().__init__((3,))
        self.s = nn.Parameter(torch.zeros(3))

    def forward(self, x, context=None):
        return x * self.s.exp(), self.s.sum().expand(self.batch_shape(x))

    def inverse(self, y, context=None):
        return y * (-self.s).exp(), -self.s.sum().expand(self.batch_shape(y))


class WrongLadj(Scale):
    """ladj = mean(s) instead of sum(s), consistently in both directions."""

    def forward(self, x, context=None):
        return x * self.s.exp(), self.s.mean().expand(self.batch_shape(x))

    def inverse(self, y, context=None):
        return y * (-self.s).exp(), -self.s.mean().expand(self.batch_shape(y))


class NonInverting(Scale):
    def inverse(self, y, context=None):
        x, ladj = super().inverse(y)
        return x + 1e-3, ladj


class InverseLadjSign(Scale):
    """Right values and a right forward ladj; the inverse returns the forward's log-determinant (its sign forgotten)."""

    def inverse(self, y, context=None):
        x, ladj = super().inverse(y)
        return x, -ladj


class BatchCoupled(Scale):
    r"""y_i = x_i + c·mean_j x_j: invertible, correct per-example ladj, but examples interact."""

    c = 0.5

    def _n(self, x):
        return math.prod(self.batch_shape(x))

    def _mean(self, x):
        return x.reshape(-1, 3).mean(0) if x.dim() > 1 else x

    def forward(self, x, context=None):
        ladj = 3 * math.log1p(self.c / self._n(x)) + 0 * self.s.sum()
        return x + self.c * self._mean(x) + 0 * self.s, ladj.expand(self.batch_shape(x))

    def inverse(self, y, context=None):
        ladj = 3 * math.log1p(self.c / self._n(y)) + 0 * self.s.sum()
        return y - self.c * self._mean(y) / (1 + self.c), -ladj.expand(self.batch_shape(y))


class UnusedParameter(Scale):
    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(2))


class AlwaysDouble(Scale):
    def forward(self, x, context=None):
        y, ladj = super().forward(x)
        return y, ladj.double()


class OnlyY(Scale):
    """Forgets the log-determinant: returns y alone."""

    def forward(self, x, context=None):
        return super().forward(x)[0]


class NoisyLadj(Scale):
    """A stochastic ladj estimate with noise of mean ``bias`` in training mode."""

    stochastic_ladj = True

    def __init__(self, bias: float) -> None:
        super().__init__()
        self.bias = bias

    def forward(self, x, context=None):
        y, ladj = super().forward(x)
        return y, ladj + (torch.randn_like(ladj) + self.bias if self.training else 0)


@pytest.mark.parametrize(
    ("bijector", "prop"),
    [
        (WrongLadj(), "forward ladj == log|det J| of the autograd Jacobian"),
        (NonInverting(), "inverse(forward(x)) == x"),
        (InverseLadjSign(), "inverse ladj == -forward ladj at y = forward(x)"),
        (BatchCoupled(), "examples in a batch are independent"),
        (NoisyLadj(bias=0.5), "E[stochastic forward ladj] == exact forward ladj"),
        (OnlyY(), "forward returns the pair (y, ladj)"),
    ],
    ids=["wrong-ladj", "non-inverting", "inverse-ladj-sign", "batch-coupled", "biased-estimator", "no-ladj"],
)
def test_kit_names_the_broken_property_and_the_input(bijector, prop):
    with pytest.raises(AssertionError) as failure:
        check_bijector(bijector, max_examples=10)
    message = str(failure.value)
    assert message.startswith(type(bijector).__name__)
    assert prop in message
    assert "batch shape" in message and "event shape (3,)" in message and "seed" in message


def test_kit_reports_the_worst_error_and_where():
    expected = r"inverse\(forward\(x\)\) == x .*batch shape \(2,\).*max error 0\.001 at index"
    with pytest.raises(AssertionError, match=expected):
        check_case(NonInverting(), (2,), seed=0)


def test_kit_catches_unused_parameters_and_dtype_changes():
    with pytest.raises(AssertionError, match="every parameter receives a gradient.*'unused'"):
        check_case(UnusedParameter(), (2,), seed=0)
    with pytest.raises(AssertionError, match="float32 forward output ladj.*torch.float64"):
        check_case(AlwaysDouble(), (2,), seed=0)


class Unmade(Scale):
    def __init__(self) -> None:
        nn.Module.__init__(self)  # not Bijector.__init__, which sets event_shape


class Quick(Scale):
    fast = "forwards"


def test_kit_names_the_bijector_that_was_not_made_as_the_base_class_says():
    with pytest.raises(ContractError, match=r"^Unmade: has no event_shape: its __init__ must call super\(\).__init__\(shape\)"):
        check_bijector(Unmade)
    with pytest.raises(ContractError, match=r"^my quick one: declares fast = 'forwards'"):
        check_bijector(Quick(), label="my quick one")


def test_kit_passes_correct_bijectors_including_unbiased_estimators():
    check_bijector(Scale(), max_examples=5)
    check_bijector(NoisyLadj(bias=0.0), max_examples=5)
    check_bijector(lambda: Inverse(Scale()), max_examples=3)
    check_bijector(SinhArcsinh(), max_examples=5)  # ladj depends on x and θ, in both modes, on wide draws


class SinhArcsinh(Bijector):
    """A correct bijector whose ladj depends on x: y = sinh(e^t·asinh(x) - k) elementwise."""

    def __init__(self) -> None:
        super().__init__((3,))
        self.skew = nn.Parameter(torch.zeros(3))
        self.log_tail = nn.Parameter(torch.zeros(3))

    def _ladj(self, x, skew=None, log_tail=None):
        skew = self.skew if skew is None else skew
        log_tail = self.log_tail if log_tail is None else log_tail
        inner = log_tail.exp() * torch.asinh(x) - skew
        return (log_tail + torch.log(torch.cosh(inner)) - 0.5 * torch.log1p(x**2)).sum(-1)

    def forward(self, x, context=None):
        return torch.sinh(self.log_tail.exp() * torch.asinh(x) - self.skew), self._ladj(x)

    def inverse(self, y, context=None):
        x = torch.sinh((torch.asinh(y) + self.skew) / self.log_tail.exp())
        return x, -self._ladj(x)


class LadjCutFromParameters(SinhArcsinh):
    """Right values, but the parameters get no gradient through ladj (detached)."""

    def forward(self, x, context=None):
        return super().forward(x)[0], self._ladj(x, self.skew.detach(), self.log_tail.detach())


class LadjFromDetachedInput(SinhArcsinh):
    """Right values, computed from x.detach(): ∂ladj/∂x is lost (a VAE's flow posterior needs it)."""

    def forward(self, x, context=None):
        return super().forward(x)[0], self._ladj(x.detach())


class InverseLadjDetached(SinhArcsinh):
    def inverse(self, y, context=None):
        x, ladj = super().inverse(y)
        return x, ladj.detach()


@pytest.mark.parametrize(
    ("bijector", "prop"),
    [
        (LadjCutFromParameters(), "forward ladj's gradient towards the parameters == ∂ log|det J|/∂θ"),
        (LadjFromDetachedInput(), "forward ladj's gradient towards x == ∂ log|det J|/∂x"),
        (InverseLadjDetached(), "inverse ladj's gradient towards y == ∂ log|det J|/∂y"),
    ],
    ids=["cut-from-parameters", "from-detached-x", "inverse-detached"],
)
def test_kit_catches_a_ladj_without_its_gradient(bijector, prop):
    with pytest.raises(AssertionError, match=re.escape(prop) + ".*autograd's are 0: ladj is cut from the graph"):
        check_bijector(bijector)


class EvalFastPath(Scale):
    """Right in training mode; in eval mode (evaluation, log_prob) a 'fast path' halves ladj, both ways."""

    def forward(self, x, context=None):
        y, ladj = super().forward(x)
        return y, ladj if self.training else 0.5 * ladj

    def inverse(self, y, context=None):
        x, ladj = super().inverse(y)
        return x, ladj if self.training else 0.5 * ladj


class EvalInverseOff(Scale):
    def inverse(self, y, context=None):
        x, ladj = super().inverse(y)
        return (x if self.training else x + 1e-3), ladj


class NoGradFastPath(Scale):
    """A 'fast path' under torch.no_grad() (where the kit checked the values) whose ladj training never sees."""

    def forward(self, x, context=None):
        y, ladj = super().forward(x)
        return y, ladj + 5.0 * torch.is_grad_enabled()


class Float32Inverse(Scale):
    """Right in float64; in float32 its inverse is off by 1e-2, as one Newton step too few would leave it."""

    def inverse(self, y, context=None):
        x, ladj = super().inverse(y)
        return (x + 1e-2 if y.dtype == torch.float32 else x), ladj


def test_kit_checks_the_ladj_with_autograd_on_and_the_inverse_in_float32():
    """The values were checked under no_grad alone, and float32's inverse for its shape and dtype alone: a flow samples
    with the float32 inverse, and trains with autograd on."""
    with pytest.raises(AssertionError, match=r"forward ladj with autograd on == under torch.no_grad\(\)"):
        check_bijector(NoGradFastPath(), max_examples=3)
    with pytest.raises(AssertionError, match=r"float32 inverse\(forward\(x\)\) agrees with float64"):
        check_bijector(Float32Inverse(), max_examples=3)


def test_kit_checks_eval_mode_too():
    with pytest.raises(AssertionError, match=r"forward ladj == log\|det J\| of the autograd Jacobian — broken in eval mode"):
        check_bijector(EvalFastPath())
    with pytest.raises(AssertionError, match=r"inverse\(forward\(x\)\) == x — broken in eval mode"):
        check_bijector(EvalInverseOff())


class WrongInTheTails(SinhArcsinh):
    """log cosh u taken as |u| - log 2 where |x| > threshold: 0.5 off out there, right near 0."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x, context=None):
        y, ladj = super().forward(x)
        inner = self.log_tail.exp() * torch.asinh(x) - self.skew
        tails = self.log_tail + inner.abs() - math.log(2) + 0.5 - 0.5 * torch.log1p(x**2)
        exact = self.log_tail + torch.log(torch.cosh(inner)) - 0.5 * torch.log1p(x**2)
        return y, torch.where(x.abs() > self.threshold, tails, exact).sum(-1)

    def inverse(self, y, context=None):
        x = super().inverse(y)[0]
        return x, -self.forward(x)[1]


def test_default_inputs_reach_the_tails_and_scale_widens_them():
    with pytest.raises(AssertionError, match=r"forward ladj == log\|det J\| of the autograd Jacobian"):
        check_bijector(WrongInTheTails(4.0))  # N(0, 1) draws alone (scale=1) seldom pass |x| = 4
    check_bijector(WrongInTheTails(8.0), scale=1.0, max_examples=4)  # standard draws only: beyond 8σ
    with pytest.raises(AssertionError, match=r"forward ladj == log\|det J\| of the autograd Jacobian"):
        check_bijector(WrongInTheTails(8.0), scale=16.0, max_examples=4)
    with pytest.raises(ValueError, match="scale must be a positive number"):
        check_case(Scale(), (2,), seed=0, scale=0.0)


class WrapParams(Params):
    model_config = ConfigDict(json_schema_extra={"examples": [{"inner": {"type": "affine", "shape": [2]}}]})
    inner: Ref("bijector")


class BareParams(Params):
    size: int = 2


class TestPlugin:
    @hookimpl
    def compose_gen_types(self):
        return [
            ComponentType("inverse_of", "bijector", WrapParams, lambda p, ctx: Inverse(ctx.component(p.inner))),
            ComponentType("bare", "bijector", BareParams, lambda p, ctx: Scale()),
        ]


def test_examples_build_inline_references_and_are_required():
    catalogue = make_catalogue([elementwise, TestPlugin()], entry_points=False)
    [(label, bijector)] = build_examples(catalogue, "inverse_of")
    assert label.startswith("inverse_of example 0") and isinstance(bijector.bijector, elementwise.ElementwiseAffine)
    check_type(catalogue, "inverse_of", max_examples=3)
    with pytest.raises(AssertionError, match="'bare' declares no example parameters.*BareParams"):
        build_examples(catalogue, "bare")


class SizedParams(Params):
    model_config = ConfigDict(json_schema_extra={"examples": [{"size": "two"}]})
    size: int = 2


class PickyParams(Params):
    model_config = ConfigDict(json_schema_extra={"examples": [{"size": 3}]})
    size: int = 2


def refuse_odd_sizes(p: PickyParams, ctx) -> Scale:
    raise KeyError(f"no table for size {p.size}")


def test_an_example_that_does_not_build_names_the_type_and_example():
    from compose_gen.testing.plugins import plugin

    catalogue = make_catalogue(
        [plugin(ComponentType("sized", "bijector", SizedParams, lambda p, ctx: Scale()), ComponentType("picky", "bijector", PickyParams, refuse_odd_sizes))],
        entry_points=False,
    )
    with pytest.raises(AssertionError, match=r"(?s)sized example 0 \{'size': 'two'\}: invalid example parameters: .*size"):
        build_examples(catalogue, "sized")
    with pytest.raises(AssertionError, match=r"picky example 0 \{'size': 3\}: build raised KeyError: 'no table for size 3'"):
        build_examples(catalogue, "picky")


def test_check_bijector_refuses_what_is_not_a_bijector():
    with pytest.raises(TypeError, match="needs a compose_gen.Bijector, got Linear"):
        check_bijector(nn.Linear(2, 2))


def test_pytest_fixture_runs_the_kit(check_bijector):
    check_bijector(Scale())
    with pytest.raises(AssertionError, match="inverse\\(forward"):
        check_bijector(NonInverting())


def test_command_line_options_reach_the_kit(request):
    from compose_gen.testing import pytest_plugin

    assert request.config.getoption("--bijector-scale") is None  # registered; the default mixes widths

    class Config:
        def getoption(self, name):
            return {"--bijector-examples": 3, "--bijector-device": "cpu", "--bijector-scale": 2.0}[name]

    assert pytest_plugin._options(Config()) == {"max_examples": 3, "device": "cpu", "scale": 2.0}


def test_a_bad_command_line_option_is_a_usage_error_not_every_test_s_failure() -> None:
    """--bijector-examples 0, a negative scale or a device torch does not have failed inside each conformance test."""
    import argparse

    from compose_gen.testing import pytest_plugin

    for kind, text in ((int, "0"), (int, "two"), (float, "-1"), (float, "inf")):
        with pytest.raises(argparse.ArgumentTypeError, match=f"expected a positive {kind.__name__}, got '{text}'"):
            pytest_plugin._positive(kind)(text)
    assert pytest_plugin._positive(float)("0.5") == 0.5

    class Config:
        def getoption(self, name, default=None):
            return "nonsense"

    with pytest.raises(pytest.UsageError, match="--bijector-device nonsense: Expected one of cpu"):
        pytest_plugin.pytest_configure(Config())


def test_without_hypothesis_the_kit_says_which_extra_to_install(monkeypatch) -> None:
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "hypothesis", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "compose_gen.testing.bijectors")
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'compose-gen\[testing\]'"):
        importlib.import_module("compose_gen.testing.bijectors")


@pytest.mark.parametrize("declared", [2, (2.0,), (0,)])
def test_kit_names_a_context_shape_that_is_no_tuple_of_sizes(declared):
    """2 crashed the kit with 'int object is not iterable' (and a list, read as a tuple now, with 'unhashable type')."""
    bijector = elementwise.ElementwiseAffine((2,))
    bijector.context_shape = declared
    with pytest.raises(TypeError, match=r"ElementwiseAffine declares context_shape = .*; the context's event shape is a tuple of positive sizes, such as \(2,\)"):
        check_case(bijector, (3,), seed=0)
    with pytest.raises(ContractError, match=r"declares context_shape"):  # validate's check of a built bijector says the same
        check_constructed(bijector)


def test_kit_reads_a_context_shape_list_as_a_tuple():
    from compose_gen.testing.bijectors import context_shape

    bijector = elementwise.ElementwiseAffine((2,))
    bijector.context_shape = [3]
    assert context_shape(bijector) == torch.Size([3])
    check_constructed(bijector)


class OutputCutFromParameters(Scale):
    """Right values; y's gradient towards s is cut (ladj keeps s's, so every parameter still receives one)."""

    def forward(self, x, context=None):
        return x * self.s.exp().detach(), self.s.sum().expand(self.batch_shape(x))


class DetachedSample(Scale):
    """Right values; inverse's x, the sample a flow's rsample returns, carries no gradient."""

    def inverse(self, y, context=None):
        x, ladj = super().inverse(y)
        return x.detach(), ladj


@pytest.mark.parametrize(
    ("bijector", "prop"),
    [
        (OutputCutFromParameters(), "forward y's gradient towards the parameters == ∂y/∂θ"),
        (DetachedSample(), "inverse x's gradient towards y == ∂x/∂y"),
    ],
    ids=["y-cut-from-parameters", "inverse-detached"],
)
def test_kit_catches_an_output_without_its_gradient(bijector, prop):
    with pytest.raises(AssertionError, match=re.escape(prop) + ".*autograd's are 0: [yx] is cut from the graph"):
        check_bijector(bijector, max_examples=3)


class TrainingInverseOff(NoisyLadj):
    """A stochastic ladj whose training-mode inverse (a posterior flow samples with it) is off by 1."""

    def __init__(self) -> None:
        super().__init__(bias=0.0)

    def inverse(self, y, context=None):
        x, ladj = super().inverse(y)
        return (x + 1.0 if self.training else x), ladj


def test_kit_compares_a_stochastic_bijector_s_training_mode_inverse_with_eval_mode():
    with pytest.raises(AssertionError, match=r"inverse\(y\) is the same in training and eval mode — broken in training mode"):
        check_bijector(TrainingInverseOff(), max_examples=3)


class BrokenHookPlugin:
    @hookimpl
    def compose_gen_types(self):
        raise RuntimeError("boom in the hook")


def test_check_type_of_a_type_the_catalogue_lacks_says_why_not_key_error():
    catalogue = make_catalogue([elementwise, BrokenHookPlugin()], entry_points=False)
    with pytest.raises(AssertionError, match=r"unknown bijector type 'mine'.*failed to load.*RuntimeError: boom in the hook"):
        check_type(catalogue, "mine")
    catalogue = make_catalogue([plugin(ComponentType("bare", "prior", BareParams, lambda p, ctx: Scale()))], entry_points=False)
    with pytest.raises(AssertionError, match=r"unknown bijector type 'bare'.*\(it is a prior type\)"):
        build_examples(catalogue, "bare")


def test_bijector_types_refuses_a_catalogue_whose_plugin_failed_rather_than_list_too_few():
    # parametrize over the plugin's types would otherwise be empty, and the conformance test skipped, not failed
    with pytest.raises(ValueError, match="boom in the hook"):
        bijector_types(make_catalogue([BrokenHookPlugin()], entry_points=False))
    shadowing = plugin(ComponentType("affine", "bijector", BareParams, lambda p, ctx: Scale()))
    with pytest.raises(ValueError, match=r"type 'affine' is first-party"):
        bijector_types(make_catalogue([shadowing], entry_points="first-party"))
    assert "affine" in bijector_types(make_catalogue([elementwise], entry_points=False))
