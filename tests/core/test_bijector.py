"""check_invertible: the dry run's numeric check of a bijector, from whichever side it is first called."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from compose_gen.core import Bijector, ContractError, check_invertible
from compose_gen.core.bijector import check_constructed


class Scale(Bijector):
    """``y = x·e^s``, with a ``breaks`` switch for the inverse."""

    def __init__(self, breaks: str = "", log_scale: float = math.log(2.0)) -> None:
        super().__init__((3,))
        self.log_scale = nn.Parameter(torch.tensor(log_scale))
        self.breaks = breaks

    def forward(self, x, context=None):
        return x * self.log_scale.exp(), (3 * self.log_scale).expand(self.batch_shape(x))

    def inverse(self, y, context=None):
        x = y * self.log_scale.exp() if self.breaks == "inverse_multiplies" else y / self.log_scale.exp()
        if self.breaks == "inverse_nan":
            x = x * math.nan
        return x, (-3 * self.log_scale).expand(self.batch_shape(y))


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_a_correct_bijector_passes_from_either_side(direction: str) -> None:
    check_invertible(Scale(), torch.randn(5, 3), direction=direction)


@pytest.mark.parametrize(
    "direction, message",
    [("forward", r"inverse\(forward\(x\)\) == x fails"), ("inverse", r"forward\(inverse\(y\)\) == y fails")],
)
def test_a_wrong_inverse_is_caught_from_the_side_first_called(direction: str, message: str) -> None:
    """A posterior flow's layers are first called to sample (inverse), and were never checked when only forward was."""
    with pytest.raises(ContractError, match=message):
        check_invertible(Scale("inverse_multiplies"), torch.randn(5, 3), direction=direction)


def test_nan_is_no_agreement() -> None:
    with pytest.raises(ContractError, match=r"inverse\(forward\(x\)\) == x fails: nan where"):
        check_invertible(Scale("inverse_nan"), torch.randn(5, 3))


def test_the_message_states_the_noise_the_parameters_were_perturbed_by() -> None:
    with pytest.raises(ContractError, match=r"its parameters perturbed by 25% noise"):
        check_invertible(Scale("inverse_multiplies"), torch.randn(5, 3), noise=0.25)


def test_parameters_are_perturbed_relative_to_their_size_and_zeros_are_moved_too() -> None:
    """Noise of a fixed σ = 0.1 on a Glow's convolution weights (~0.04) blew a correct stack's round trip up to 1e32."""
    from compose_gen.core.bijector import _perturbed

    layer = nn.Module()
    layer.small = nn.Parameter(torch.full((400,), 0.04))
    layer.large = nn.Parameter(torch.full((400,), 10.0))
    layer.zero = nn.Parameter(torch.zeros(400))
    twin = _perturbed(layer, noise=0.1, training=False)
    moved = {name: float((getattr(twin, name) - getattr(layer, name)).detach().std()) for name in ("small", "large", "zero")}
    assert moved["small"] == pytest.approx(0.004, rel=0.15) and moved["large"] == pytest.approx(1.0, rel=0.15)
    assert moved["zero"] == pytest.approx(0.01, rel=0.15)
    assert torch.equal(layer.zero, torch.zeros(400)), "the original is untouched"


class OffWhileTraining(Scale):
    """Its ladj is 1 nat off in training mode alone, as a batch-norm layer that reads its running variance there would be:
    an eval-mode check passed it, and it trained to an NLL below the data's entropy."""

    def forward(self, x, context=None):
        y, ladj = super().forward(x, context)
        return y, ladj + 1.0 if self.training else ladj

    def inverse(self, y, context=None):
        x, ladj = super().inverse(y, context)
        return x, ladj - 1.0 if self.training else ladj


def test_a_log_determinant_wrong_in_training_mode_alone_is_caught() -> None:
    with pytest.raises(ContractError, match=r"forward ladj == log\|det J\| of the autograd Jacobian fails: .* \(in training mode,"):
        check_invertible(OffWhileTraining(), torch.randn(5, 3))


def test_a_stochastic_log_determinant_is_checked_in_eval_mode_alone() -> None:
    """In training mode it is an estimate (a residual flow's), which no Jacobian equals."""
    estimate = OffWhileTraining()
    estimate.stochastic_ladj = True
    check_invertible(estimate, torch.randn(5, 3))


class Unmade(Scale):
    """Forgot Bijector.__init__: nn.Module's alone sets no event_shape."""

    def __init__(self) -> None:
        nn.Module.__init__(self)


class Quick(Scale):
    fast = "forwards"  # a typo of "forward"


@pytest.mark.parametrize(
    "bijector, message",
    [
        (Unmade, r"has no event_shape: its __init__ must call super\(\).__init__\(shape\)"),
        (Quick, r"declares fast = 'forwards'; the fast direction is one of 'forward', 'inverse', 'both'"),
    ],
)
def test_a_bijector_is_checked_to_be_made_as_the_base_class_says(bijector, message: str) -> None:
    check_constructed(Scale())
    with pytest.raises(ContractError, match=message):
        check_constructed(bijector())


class ScaleBy3(Bijector):
    """``y = 3x`` on 64 values, ladj 64·log 3 ≈ 70.3 reported ``off`` too high (and ``-off`` too low back): the two
    directions agree, so only the Jacobian can tell."""

    def __init__(self, off: float) -> None:
        super().__init__((64,))
        self.off = off
        self.log_scale = nn.Parameter(torch.full((64,), math.log(3.0)))

    def forward(self, x, context=None):
        return x * self.log_scale.exp(), self.log_scale.sum().expand(self.batch_shape(x)) + self.off

    def inverse(self, y, context=None):
        return y * (-self.log_scale).exp(), -self.log_scale.sum().expand(self.batch_shape(y)) - self.off


@pytest.mark.parametrize("off", [0.6, 0.05])
def test_a_log_determinant_off_by_a_fraction_of_a_nat_is_refused(off: float) -> None:
    """A tolerance of 1% of 1 + |ladj| let 0.6 nats through on 64 values: ten such layers, 6 nats too good an NLL."""
    check_invertible(ScaleBy3(0.0), torch.randn(5, 64))
    with pytest.raises(ContractError, match=r"forward ladj == log\|det J\| of the autograd Jacobian fails"):
        check_invertible(ScaleBy3(off), torch.randn(5, 64))
