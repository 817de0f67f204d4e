"""The data-space convention of likelihoods, which every plugin that reports one follows.

A dataset's scaling and ``transforms`` map the data as read (data space) to the
fields the model sees; their log-determinant is a constant
(``TensorData.ladj_to_model``) plus, for a transform like ``logit``, a
per-example part in the field :func:`ladj_field` names (``ladj_x``).  A loss or
metric adds both, so NLL and bits/dim are of the data.  On data a continuous
density can pile onto (a few distinct values, a constant feature) the
likelihood is unbounded, which :func:`continuous_density_caveat` says.
"""

from __future__ import annotations

from typing import Collection

import torch
from torch import Tensor

__all__ = ["check_ladj", "constant_features", "continuous_density_caveat", "few_values", "ladj_field", "not_in_data_space"]


def ladj_field(name: str) -> str:
    """Name of the field holding the per-example log-determinant of field ``name``."""
    return f"ladj_{name}"


def check_ladj(x: str, ladj: str | None, fields: Collection[str], needed: bool = True) -> None:
    """Refuse a likelihood loss's ``ladj:`` unless it names the per-example log-determinant of its ``x`` (the field
    :func:`ladj_field` names), and, when ``needed``, its absence where the data have that field: either way the
    likelihood would be counted in neither the model's space nor the data's."""
    expected = ladj_field(x)
    if ladj is not None and ladj != expected:
        has = f"the field {expected!r}" if expected in fields else "none: " + ("a graph value" if x not in fields else "no transform of it has one")
        raise ValueError(f"ladj: {ladj!r}, but ladj is the per-example log-determinant of x = {x!r}, which has {has}")
    if ladj is None and needed and expected in fields:
        raise ValueError(
            f"the dataset's transforms give {x!r} a per-example log-determinant; set `ladj: {expected}` so that the likelihood "
            "is counted in data space"
        )


def constant_features(x: Tensor) -> str | None:
    """``"2 feature(s) ... (flat index 3, 7)"`` when some features of ``x`` (examples along dim 0) are constant, else None.

    A density fitted there can grow without bound (a learned scale shrinking to 0).
    """
    x = x.flatten(1)
    constant = (x == x[:1]).all(0).nonzero().flatten().tolist()
    if not constant or len(x) < 2:
        return None
    shown = ", ".join(map(str, constant[:5])) + (", …" if len(constant) > 5 else "")
    return f"{len(constant)} feature(s) are constant in the train split (flat index {shown})"


#: Examples :func:`few_values` looks at: enough to see a grid, few enough to stay quick on large data.
_LOOKED_AT = 2000


def few_values(x: Tensor) -> str | None:
    """``"the data take only 17 distinct values (0..0.94)"`` when ``x`` (examples along dim 0) lie on a grid of at most 256, else None."""
    x = x[:_LOOKED_AT].flatten(1)
    values = torch.unique(x)
    if len(values) <= 256 and x.numel() >= 8 * len(values):
        if len(values) == 1:
            return f"the data take a single value ({values[0].item():g})"
        return f"the data take only {len(values)} distinct values ({values[0].item():g}..{values[-1].item():g})"
    return None


def continuous_density_caveat(x: Tensor) -> str | None:
    """Why a continuous density's likelihood of ``x`` (examples along dim 0) would be unbounded, or None.

    On data that take a few values, or on a feature that is constant, a density can
    grow without bound at those points, so its NLL falls forever and bits/dim are no
    bound on the discrete data's (Theis et al. 2016); dequantization fills each bin.
    """
    return few_values(x) or constant_features(x[:_LOOKED_AT])


def not_in_data_space(value: str) -> str:
    """Why a likelihood of the graph value ``value`` (not a field of the data) is not one of the data.

    The data's scaling and transforms have a log-determinant from data space to the
    fields they produce; a value computed in the graph has none of them, so its NLL
    and bits/dim are quoted as the model sees that value.
    """
    return (
        f"it models the graph value {value!r}, not a field of the data, so the NLL and bits/dim are of "
        "that value as the model sees it, without the log-determinant of the data's scaling and transforms"
    )
