"""The kit passes a shipped sampler, and catches broken samplers."""

from __future__ import annotations

import math

import pytest
import torch
from component_kit_helpers import PRIORS, decoders
from torch import nn

from compose_gen import ClassConditions, Sampler
from compose_gen.core import ContractError
from compose_gen.testing.components import check_sampler

# --------------------------------------------------------------------------- the shipped components


def test_the_shipped_ancestral_sampler_passes_by_class(build):
    sampler = build({"type": "ancestral", "prior": PRIORS["standard_normal"], "decoder": decoders(4)["gaussian_learned"], "classes": 4, "condition": "c"})
    assert check_sampler(sampler, n=6).shape == (6, 6)



# --------------------------------------------------------------------------- broken samplers


class Draws(Sampler):
    """A correct unconditional sampler: n draws of N(0, T²I) in two dimensions."""

    def sample(self, n, temperature=1.0, context=None):
        return temperature * torch.randn(n, 2)


class ByClass(Sampler):
    """A correct class-conditional sampler: example i at the one-hot mean of its class."""

    conditions = ClassConditions("c", 3)

    def sample(self, n, temperature=1.0, context=None):
        return context + temperature * torch.randn(n, 3)


class WrongCount(Draws):
    def sample(self, n, temperature=1.0, context=None):
        return super().sample(n + 1, temperature)


class Squeezes(Draws):
    def sample(self, n, temperature=1.0, context=None):
        return super().sample(n, temperature).squeeze()


class OneRoundOfClasses(ByClass):
    def sample(self, n, temperature=1.0, context=None):
        return torch.eye(3) + temperature * torch.randn(3, 3)


class IgnoresClasses(ByClass):
    def sample(self, n, temperature=1.0, context=None):
        return temperature * torch.randn(n, 3)


class NoTemperature(Sampler):
    def sample(self, n):
        return torch.randn(n, 2)


class IgnoresTemperature(Draws):
    def sample(self, n, temperature=1.0, context=None):
        return super().sample(n)


class HasNoTemperature(Draws):
    """Draws uniformly, which no temperature changes: it says so, as the VQ-VAE does."""

    def sample(self, n, temperature=1.0, context=None):
        if temperature != 1:
            raise ValueError("uniform draws have no temperature")
        return torch.rand(n, 2)


class OwnGenerator(Draws):
    """Ignores its temperature, which the kit cannot see when every call draws afresh."""

    def __init__(self) -> None:
        super().__init__()
        self.generator = torch.Generator().manual_seed(0)

    def sample(self, n, temperature=1.0, context=None):
        return torch.randn(n, 2, generator=self.generator)


class TupleConditions(ByClass):
    conditions = ("c", 3)


class NaNs(Draws):
    def sample(self, n, temperature=1.0, context=None):
        return torch.full((n, 2), math.nan)


def test_correct_samplers_pass():
    assert check_sampler(Draws()).shape == (5, 2)
    assert check_sampler(ByClass(), n=4).shape == (4, 3)
    torch.testing.assert_close(check_sampler(ByClass(), n=4, temperature=0.0), torch.eye(3)[[0, 1, 2, 0]])
    assert check_sampler(HasNoTemperature()).shape == (5, 2)


@pytest.mark.parametrize(
    ("sampler", "message"),
    [
        (WrongCount(), r"WrongCount: sample\(1\) returned a Tensor of shape \(2, 2\), not a tensor of 1 examples"),
        (Squeezes(), r"Squeezes: sample\(1\) returned a Tensor of shape \(2,\), not a tensor of 1 examples"),
        (OneRoundOfClasses(), r"OneRoundOfClasses: sample\(1\) returned a Tensor of shape \(3, 3\)"),
        (IgnoresClasses(), r"IgnoresClasses: ignores its context: the same draws \(same seed\) for other class labels"),
        (NoTemperature(), r"NoTemperature: sample\(1, temperature=1.0\) raised TypeError"),
        (OwnGenerator(), r"OwnGenerator: draws other samples at each call from the same seed; expected it to draw from torch's global"),
        (IgnoresTemperature(), r"IgnoresTemperature: ignores its temperature: the same draws \(same seed\) at 0.7 as at 1"),
        (TupleConditions(), r"TupleConditions: conditions is a tuple, not None or a compose_gen.ClassConditions"),
        (NaNs(), r"NaNs: sample\(1, temperature=1.0\) has 2 non-finite values of 2"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None,
)
def test_a_broken_sampler_is_told_what_is_wrong(sampler, message):
    with pytest.raises(ContractError, match=message):
        check_sampler(sampler)


def test_a_sampler_returning_a_round_of_classes_is_caught_at_a_count_unlike_the_class_count():
    class RoundOfClasses(OneRoundOfClasses):
        def sample(self, n, temperature=1.0, context=None):
            return context if n in (1, 5) else torch.eye(3)  # right for the counts 1 and n, not for classes + 1

    with pytest.raises(ContractError, match=r"sample\(4\) returned a Tensor of shape \(3, 3\), not a tensor of 4 examples"):
        check_sampler(RoundOfClasses())

