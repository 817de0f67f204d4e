"""Seeds derived from a spec's (or a plugin's) seed, for every derived stream.

Two layouts, kept apart because checkpoints and resumed runs depend on the exact
numbers each gives (one formula for both would change every stream):

* :func:`derive_seed`: a sub-stream of ``seed`` named by salts (an epoch, a
  stream name), ``seed·P + salt`` with the prime P = 1 000 003;
* :func:`offset_seed`: the ``index``-th sibling of ``seed``, ``seed + index·stride``
  (process ``r``'s noise: stride :data:`RANK_STRIDE`; copy ``k`` of a repeated
  component: ``compose_gen.compiler.build.SEED_STRIDE``, unreduced).
"""

from __future__ import annotations

import zlib

__all__ = ["RANK_STRIDE", "SALT_STRIDE", "derive_seed", "offset_seed"]

#: Multiplier of :func:`derive_seed`'s Horner scheme (a prime, so that neighbouring seeds do not collide soon).
SALT_STRIDE = 1_000_003
#: Distance between the noise seeds of neighbouring processes (a prime).
RANK_STRIDE = 7919


def derive_seed(seed: int, *salts: int | str, modulus: int = 2**63) -> int:
    """``(…((seed·P + s₁)·P + s₂)…) mod modulus``, P = :data:`SALT_STRIDE`; a string salt counts as the CRC-32 of its UTF-8 bytes."""
    for salt in salts:
        seed = seed * SALT_STRIDE + (zlib.crc32(salt.encode()) if isinstance(salt, str) else salt)
    return seed % modulus


def offset_seed(seed: int, index: int, stride: int, modulus: int | None = 2**63) -> int:
    """``(seed + index·stride) mod modulus``, not reduced when ``modulus`` is None."""
    seed += index * stride
    return seed if modulus is None else seed % modulus
