"""Checks of datasets."""

from __future__ import annotations

from typing import Callable

import torch

from compose_gen.core import Splits
from compose_gen.core.contracts import ContractError, check_splits
from compose_gen.testing.components._common import _calling, _fail


def check_dataset(build: Callable[[], Splits], label: str = "dataset") -> Splits:
    """``check_splits`` on what ``build()`` returns, and the same examples in the same order when it is called again,
    whatever torch's global random state: a checkpoint records the train split's fingerprint, and a resume that rebuilds
    another one warns and records no evaluation.  ``build`` is your type's build with fixed parameters, e.g.
    ``lambda: build_points(PointsParams(path=file, seed=3), None)``; returns the first build's splits."""
    splits = _built(build, label, state=0)
    again = _built(build, label, state=1)
    for half in ("train", "test"):
        first, second = getattr(splits, half), getattr(again, half)
        if first.fingerprint() != second.fingerprint():
            raise _fail(
                label,
                f"two builds from the same parameters gave other {half} splits: draw randomness from a generator seeded by "
                "the parameters (compose_gen_plugins.datasets.seeded_generator(seed, stream)), not from torch's, numpy's "
                "or Python's global state",
            )
    return splits


def _built(build: Callable[[], Splits], label: str, state: int) -> Splits:
    """``build()`` with torch's global generator seeded by ``state`` (so that a dataset that draws from it shows it),
    checked, with the caller's random state left as it was."""
    with torch.random.fork_rng(devices=[]), _calling(label, "build()"):
        torch.manual_seed(state)
        splits = build()
    if not isinstance(splits, Splits):
        raise _fail(label, f"build returned a {type(splits).__name__}, not compose_gen.Splits")
    try:
        check_splits(splits)
    except ContractError as error:
        raise _fail(label, str(error)) from None
    return splits
