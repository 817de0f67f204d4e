r"""Uniform dequantization (Uria et al. 2013, arXiv:1306.0186; Theis et al. 2016, arXiv:1511.01844).

Discrete data on a grid of spacing :math:`1/L` (``levels`` :math:`L` per unit), i.e.
:math:`x = k/L` with integer :math:`k`, get uniform noise filling their bin:

.. math:: y = x + u/L = (k + u)/L, \qquad u \sim \mathcal U[0, 1)^D.

The inverse (sampling direction) rounds down to the grid:
:math:`x = \lfloor L y\rfloor / L`, and for :math:`L > 1`, whose data are
:math:`k = 0, \dots, L - 1`, to the nearest of those levels: a model's samples
beyond :math:`[0, 1)` (a logit's inverse reaches past it) stay on the data's grid.
Its domain is then the values that round to a level, so a flow gives
:math:`\log p = -\infty` outside the grid rather than NaN from the layers after it.
``forward`` is stochastic in every mode.

**Likelihood accounting.**  For a continuous model density :math:`p` over ``y``,
Jensen's inequality gives a lower bound on the probability of the discrete
value :math:`k`, counted in *data space* (integers, unit bins):

.. math:: \log P(k) = \log \int_{[0,1)^D} p\big((k + u)/L\big)\,L^{-D}\,du
          \ \ge\ \mathbb E_u\big[\log p\big((k + u)/L\big)\big] - D\log L .

This layer is a translation, so its ``ladj`` is 0.  The :math:`-D\log L` term is the
log-volume of one bin, the Jacobian of scaling integers by :math:`1/L`; it is
counted once, by whichever component did that scaling: the dataset's
``TensorData.ladj_to_model`` (``-D log L`` for integers scaled by :math:`1/L`, e.g.
``levels: 17`` for digits ``0..16``, 17 values, read with ``scale: false`` and scaled by 1/17), which the flow NLL adds
back, or an affine bijector placed after this one on raw integers
(``levels: 1``).  Then NLL (nats) = :math:`-\mathbb E_u[\log p(y)] - \text{ladj\_to\_model}`,
and bits/dim = NLL / (D log 2), an upper bound on the discrete model's, as reported
in papers.  The build step checks ``levels`` against the dataset when it knows one.

It is a stochastic surjection, not a bijection: ``inverse(forward(x)) == x`` on the
grid, but ``forward(inverse(y))`` only lands in the bin of ``y``, so the
conformance kit's round trip from ``y`` does not apply to it.
"""

from __future__ import annotations

import math

import torch
from pydantic import ConfigDict, Field, PositiveInt
from torch import Tensor
from torch.distributions import constraints

from compose_gen import Bijector, BuildContext, ComponentType, Params, hookimpl
from compose_gen_plugins.flows import EventShape

__all__ = ["UniformDequantization"]


class UniformDequantization(Bijector):
    """``y = x + u/levels`` with ``u ~ U[0, 1)`` (kept off the bin's edges); inverse ``floor(levels·y)/levels``, within the levels ``0..levels−1``
    when ``levels > 1``; ``ladj = 0`` (translation)."""

    surjective = True

    def __init__(self, shape: tuple[int, ...], levels: int) -> None:
        super().__init__(shape)
        self.levels = levels
        if levels > 1:  # x = k/L for k = 0..L−1: the values that round to one of them
            self.domain = constraints.half_open_interval(-0.5 / levels, (levels - 0.5) / levels)

    def _bin(self, y: Tensor) -> Tensor:
        """The integer ``k`` of the bin holding ``y``: the one definition both directions use."""
        return torch.floor(y * self.levels)

    def _level(self, k: Tensor) -> Tensor:
        """``k`` within the data's levels ``0..levels−1`` when ``levels > 1`` (raw integers, ``levels: 1``, have no range)."""
        return k if self.levels == 1 else k.clamp(0, self.levels - 1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        with torch.no_grad():  # the noise is no function of x (and nextafter has no derivative on every build)
            # k, even if x = k/L carries rounding error; the domain's last values may round half to even past the top level
            grid = self._level(torch.round(x * self.levels))
            y = (grid + _open_uniform(x)) / self.levels
            centre = (grid + 0.5) / self.levels
            for _ in range(4):  # rounding may put (k + u)/L just across a bin edge: step back, an ulp at a time
                y = torch.where(self._bin(y) == grid, y, torch.nextafter(y, centre))
        return y + (x - x.detach()), x.new_zeros(self.batch_shape(x))  # value exactly y, Jacobian I

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._level(self._bin(y)) / self.levels, y.new_zeros(self.batch_shape(y))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, levels={self.levels}"


def _open_uniform(like: Tensor) -> Tensor:
    """``u ~ U[0, 1)`` clamped into ``[eps, 1 − eps]`` (``eps`` of ``like``'s dtype), so that ``y`` lies strictly inside (0, 1).

    ``torch.rand`` returns exactly 0 (float32: about 5e-8 of draws), and level 0 then gave ``y = 0``, outside a following
    ``logit``'s (0, 1) at ``alpha: 0`` (``-inf``, then a NaN log-density); now ``y ≥ eps/L``, a normal float (a subnormal
    could be flushed to 0), and the steps back in ``forward`` keep the top level's ``y < 1``.  The clamp moves a mass of
    ``2·eps`` by at most ``eps``: ``E_u[log p]`` changes by O(eps); ``ladj`` (0) and the bin volume are as before.
    """
    eps = torch.finfo(like.dtype).eps
    return torch.rand_like(like).clamp_(eps, 1 - eps)


class DequantizeParams(Params):
    """Uniform dequantization of data on a grid of spacing 1/levels."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"shape": [4], "levels": 16}]})
    shape: EventShape = Field(..., description="event shape of x")
    levels: PositiveInt = Field(..., description="grid steps per unit: the data are integers scaled by 1/levels")


def build_dequantize(params: DequantizeParams, ctx: BuildContext | None) -> UniformDequantization:
    """Uniform dequantization y = x + u/levels, u ~ U[0,1) (Uria et al. 2013; Theis et al. 2016)."""
    data = getattr(ctx, "data", None)
    if data is not None and "x" in data.train.fields:  # data of other fields (two domains): which one it reads is the flow's loss's
        _check_grid(data.train.fields["x"], data.train.ladj_to_model, params.levels)
    return UniformDequantization(tuple(params.shape), params.levels)


def _check_grid(x: Tensor, ladj_to_model: float, levels: int) -> None:
    """Raise unless ``x`` lies on the ``1/levels`` grid, within its ``0..levels-1``, and the dataset counts the bin volume once."""
    scaled = x.double() * levels
    off_grid = (scaled - scaled.round()).abs().max().item()
    if off_grid > 1e-4:
        raise ValueError(
            f"dequantize: levels={levels} but the data are not multiples of 1/{levels} "
            f"(largest distance to the grid: {off_grid:.3g} steps)"
        )
    low, top = int(scaled.min().round().item()), int(scaled.max().round().item())
    if levels > 1 and top >= levels and (x.double() - x.double().round()).abs().max().item() < 1e-4:
        raw_top = int(x.max().round().item())  # integers never scaled: 0..255 rather than k/256, or binarized 0..1
        raise ValueError(
            f"dequantize: levels={levels} takes data k/{levels} in [0, 1), but the data are integers up to {raw_top}, "
            f"not yet scaled: scale them by 1/{raw_top + 1} with `levels: {raw_top + 1}` "
            f"(the dataset's `transforms: [..., {{type: scale, a: {1 / (raw_top + 1)!r}}}]`), or dequantize the integers "
            "themselves with `levels: 1`"
        )
    if levels > 1 and (low < 0 or top > levels - 1):  # levels 1: raw integers, scaled by a bijector after this one
        need = top + 1
        raise ValueError(
            f"dequantize: levels={levels} fills the grid k/{levels} for k = 0..{levels - 1}, but the data reach "
            f"k = {low if low < 0 else top}, so (k + u)/{levels} leaves [0, 1)"
            + (
                ""
                if low < 0
                else f". The data take {need} levels (0..{top}): set `levels: {need}`, with the data scaled by 1/{need} "
                f"(for digits, `scale: false` and `transforms: [{{type: scale, a: {1 / need!r}}}]`)"
            )
        )
    dims = x[0].numel()
    expected = -dims * math.log(levels)
    if not math.isclose(ladj_to_model, expected, rel_tol=1e-6, abs_tol=1e-6):
        raise ValueError(
            f"dequantize: levels={levels} implies a bin volume of -D·log(levels) = {expected:.6g} nats, but the "
            f"dataset's ladj_to_model is {ladj_to_model:.6g}; bits/dim would be off. Match levels to the "
            "dataset's scaling (or scale raw integers with a bijector after levels: 1)"
        )


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [ComponentType("dequantize", "bijector", DequantizeParams, build_dequantize)]
