"""Permutations act on features or channels, are seeded, and validate their index."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

from compose_gen import SpecWarning
from compose_gen_plugins.flows.permutations import (
    Permutation,
    RandomPermutationParams,
    ReverseParams,
    build_random_permutation,
    build_reverse,
)


def test_reverse_reverses_channels_of_images_only():
    x = torch.randn(2, 3, 2, 2)
    y, ladj = build_reverse(ReverseParams(shape=[3, 2, 2]), None)(x)
    assert torch.equal(y, x.flip(1)) and torch.equal(ladj, torch.zeros(2))


def test_random_permutation_is_fixed_by_its_seed():
    def perm(seed: int) -> list[int]:
        return build_random_permutation(RandomPermutationParams(shape=[8], seed=seed), None).permutation.tolist()

    assert perm(1) == perm(1) != perm(2)
    assert sorted(perm(1)) == list(range(8))


def test_permutation_rejects_non_permutations():
    with pytest.raises(ValueError, match="not a permutation of range\\(3\\)"):
        Permutation((3,), torch.tensor([0, 0, 2]))


def test_a_random_permutation_that_draws_the_identity_is_drawn_again_from_the_same_generator():
    def perm(size: int, seed: int) -> list[int]:
        return build_random_permutation(RandomPermutationParams(shape=[size], seed=seed), None).permutation.tolist()

    assert torch.randperm(2, generator=torch.Generator().manual_seed(0)).tolist() == [0, 1], "seed 0 first draws the identity"
    assert perm(2, 0) == [1, 0]
    assert all(perm(size, seed) != list(range(size)) for size in (2, 3) for seed in range(40))
    assert perm(1, 0) == [0]
    generator = torch.Generator().manual_seed(1)
    assert perm(30, 1) == torch.randperm(30, generator=generator).tolist(), "a draw that moves something is kept"


@pytest.mark.parametrize(
    ("shape", "advice"),
    [([1, 6, 6], "alternate the parity of checkerboard couplings (flip: true"), ([1], "there is one feature")],
)
def test_reverse_of_a_single_channel_or_feature_warns_that_it_is_the_identity(shape: list[int], advice: str) -> None:
    with pytest.warns(SpecWarning, match=re.escape(f"reverse on shape {shape} permutes nothing")) as caught:
        layer = build_reverse(ReverseParams(shape=shape), None)
    assert advice in str(caught[0].message)
    x = torch.randn(2, *shape)
    assert torch.equal(layer(x)[0], x)


def test_reverse_of_several_channels_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecWarning)
        layer = build_reverse(ReverseParams(shape=[2, 6, 6]), None)
    x = torch.randn(3, 2, 6, 6)
    assert torch.equal(layer(x)[0], x.flip(-3)) and torch.equal(layer.inverse(layer(x)[0])[0], x)
