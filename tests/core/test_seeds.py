"""Derived seeds: the helpers reproduce, bit for bit, the formulas runs and checkpoints were made with."""

from __future__ import annotations

import zlib

import pytest

from compose_gen.compiler.build import SEED_STRIDE
from compose_gen.core import derive_seed, offset_seed
from compose_gen.core.seeds import RANK_STRIDE

SEEDS = [0, 1, 42, 2**31 - 1, 2**63 - 1, 2**64 + 5, 10**30, -1, -(2**63), -(10**25)]
INDICES = [0, 1, 3, 2**20]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("i", INDICES)
def test_the_seeds_are_the_old_formulas(seed: int, i: int) -> None:
    # a process's noise (run.py) and its restart from a checkpoint at step i without RNG state (trainer.py)
    assert offset_seed(seed, i, RANK_STRIDE) == (seed + 7919 * i) % 2**63
    for step in (0, 7, 10**6):
        assert offset_seed(seed + step, i, RANK_STRIDE) == (seed + 7919 * i + step) % 2**63
    # the data stream's epoch i (data.py)
    assert derive_seed(seed, i, modulus=2**64) == (seed * 1_000_003 + i) % 2**64
    # copy i of a repeated component (compiler/build.py), unreduced
    assert offset_seed(seed, i, SEED_STRIDE, modulus=None) == seed + i * 1_000_003
    # a dataset's named stream (datasets/base.py)
    for stream in ("split", "dequantize", "", "ünïcode"):
        assert derive_seed(seed, stream) == (seed * 1_000_003 + zlib.crc32(stream.encode())) % 2**63


def test_reduced_seeds_are_valid_torch_seeds() -> None:
    for seed in SEEDS:
        assert 0 <= derive_seed(seed, "split") < 2**63
        assert 0 <= derive_seed(seed, 5, modulus=2**64) < 2**64
        assert 0 <= offset_seed(seed, 3, RANK_STRIDE) < 2**63


def test_different_salts_give_different_seeds() -> None:
    for seed in (0, 42, 2**62):
        assert len({derive_seed(seed, salt) for salt in ("split", "noise", "dequantize", 0, 1, 2)}) == 6
        assert len({derive_seed(seed, epoch, modulus=2**64) for epoch in range(100)}) == 100
        assert len({offset_seed(seed, rank, RANK_STRIDE) for rank in range(64)}) == 64
        assert len({offset_seed(seed, copy, SEED_STRIDE, modulus=None) for copy in range(64)}) == 64
    assert derive_seed(1, "a", "b") != derive_seed(1, "b", "a")
