"""Samplers: the truncation trick draws a truncated normal (redrawn, not clamped); conditional labels cycle."""

from __future__ import annotations

import math

import torch
from torch import nn

from compose_gen_plugins.distributions import StandardNormal
from compose_gen_plugins.samplers import GeneratorSampler


def truncated_normal_std(bound: float) -> float:
    """Standard deviation of N(0, 1) truncated to [-b, b]: sqrt(1 - 2 b φ(b) / (2Φ(b) - 1))."""
    density = math.exp(-bound**2 / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(bound / math.sqrt(2))
    return math.sqrt(1 - 2 * bound * density / mass)


def test_truncation_redraws_coordinates_beyond_the_bound() -> None:
    sampler = GeneratorSampler(StandardNormal((2,)), nn.Identity(), truncation=1.0, classes=None)
    torch.manual_seed(0)
    z = sampler.sample(20_000)
    assert z.abs().max() <= 1.0
    assert (z.abs() > 0.999).float().mean() < 0.002, "clamping would pile 32% of the draws onto ±1"
    assert abs(z.std().item() - truncated_normal_std(1.0)) < 0.01  # 0.5396; the untruncated std is 1
    hot = sampler.sample(20_000, temperature=0.5)
    assert hot.abs().max() <= 0.5 and abs(hot.std().item() - 0.5 * truncated_normal_std(1.0)) < 0.005


class LabelRecorder(nn.Module):
    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.labels = labels
        return z


def test_a_conditional_generator_gets_labels_cycling_through_the_classes() -> None:
    generator = LabelRecorder()
    x = GeneratorSampler(StandardNormal((3,)), generator, truncation=None, classes=4).sample(10)
    assert x.shape == (10, 3)
    assert generator.labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
