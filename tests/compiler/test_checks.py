"""``nonfinite_sources``: which component turned finite inputs into NaN or inf, however its inputs were passed."""

from __future__ import annotations

import math

import torch
from torch import nn

from compose_gen.compiler.checks import nonfinite_sources


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x, context=None):
        return x * self.factor + (0 if context is None else context["shift"] if isinstance(context, dict) else context)


def test_the_component_that_makes_the_nan_is_named_not_the_ones_it_is_given_to() -> None:
    """By position, by keyword and in a mapping: a NaN passed in is not made."""
    maker, given, keyed, mapped = Scale(math.nan), Scale(1.0), Scale(1.0), Scale(1.0)
    parts = {"maker": maker, "given": given, "keyed": keyed, "mapped": mapped}
    x = torch.ones(3)
    with nonfinite_sources(parts) as sources:
        nan = maker(x)
        given(nan)
        keyed(x, context=nan)
        mapped(x, {"shift": nan})
    assert sources == ["maker"]
    assert not any(m._forward_hooks for m in parts.values()), "the hooks are removed"
