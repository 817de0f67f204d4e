"""Toy 2D datasets: ``x`` of shape ``(N, 2)``, ``y`` the mode or component index.

Each is drawn with a torch generator seeded by ``seed``, then split with
``test_fraction``.  Mixtures of Gaussians store their centres in
``meta["modes"]`` (a ``(K, 2)`` tensor, data space) and their standard
deviation in ``meta["mode_std"]`` for mode-coverage metrics; ``rings`` stores
``meta["radii"]`` and ``meta["mode_std"]`` (the radial spread).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import torch
from pydantic import Field
from torch import Tensor

from compose_gen import BuildContext, ComponentType, Splits, hookimpl
from compose_gen.core import MAX_CLASSES
from compose_gen_plugins.datasets.base import DatasetError, DatasetParams, DataSpace, make_splits, seeded_generator, split_fields
from compose_gen_plugins.datasets.limits import BEYOND_FLOAT32, float32_overflow

#: The most examples a toy set may draw: 10⁸ points take 1.6 GB while drawn (float64) and about 40 s; far beyond it
#: (``n: 1e12``) a typo is likelier than a plan, and would fail in torch's allocator instead of at validation.
MAX_TOY_EXAMPLES = 100_000_000

__all__ = ["compose_gen_types"]



class Sample(NamedTuple):
    """What a toy sampler draws: ``x`` (float64, ``(n, 2)``), labels and their count, metadata."""

    x: Tensor
    y: Tensor | None = None
    num_classes: int | None = None
    meta: dict[str, object] = {}


class ToyParams(DatasetParams):
    n: int = Field(
        10_000, ge=2, le=MAX_TOY_EXAMPLES, description=f"examples, train and test together (at most {MAX_TOY_EXAMPLES:,}: drawn in float64)"
    )


class EightGaussiansParams(ToyParams):
    noise: float = Field(0.02, ge=0.0, description="standard deviation of each mode")
    radius: float = Field(2.0, gt=0.0, description="radius of the circle the eight modes lie on")


class GaussianGridParams(ToyParams):
    noise: float = Field(0.05, ge=0.0, description="standard deviation of each mode")
    size: int = Field(5, ge=1, le=math.isqrt(MAX_CLASSES), description="modes per side (size² classes, at most MAX_CLASSES)")
    spacing: float = Field(2.0, gt=0.0, description="distance between neighbouring modes")


class MoonsParams(ToyParams):
    noise: float = Field(0.05, ge=0.0, description="standard deviation of the Gaussian noise added to each point")


class CirclesParams(ToyParams):
    noise: float = Field(0.05, ge=0.0, description="standard deviation of the Gaussian noise added to each point")
    factor: float = Field(0.5, gt=0.0, lt=1.0, description="inner radius / outer radius")


class PinwheelParams(ToyParams):
    noise: float = Field(0.1, ge=0.0, description="tangential standard deviation")
    radial_std: float = Field(0.3, ge=0.0, description="radial standard deviation")
    arms: int = Field(5, ge=1, le=MAX_CLASSES, description="number of arms, one class each")
    rate: float = Field(0.25, description="twist: a point at radial coordinate r turns by rate·e^r radians")


class SwissRollParams(ToyParams):
    noise: float = Field(1.0, ge=0.0, description="standard deviation before the 1/5 scaling")


class RingsParams(ToyParams):
    noise: float = Field(0.08, ge=0.0, description="radial standard deviation")
    rings: int = Field(4, ge=1, le=MAX_CLASSES, description="number of rings, of radii 3k/rings for k = 1..rings, one class each")


class TwoSpiralsParams(ToyParams):
    noise: float = Field(0.1, ge=0.0, description="standard deviation of the Gaussian noise added after the 1/3 scaling")


def _eight_gaussians(p: EightGaussiansParams, g: torch.Generator) -> Sample:
    """Eight Gaussians on a circle: ``x = r·(cos 2πk/8, sin 2πk/8) + σ·ε``
    (Metz et al., 2017, "Unrolled GANs")."""
    angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    modes = p.radius * torch.stack([angles.cos(), angles.sin()], 1)
    return _mixture(modes, p.noise, p.n, g)


def _gaussian_grid(p: GaussianGridParams, g: torch.Generator) -> Sample:
    """A size×size grid of Gaussians ``x = spacing·(i, j) + σ·ε``, centred
    (Srivastava et al., 2017, "VEEGAN")."""
    axis = (torch.arange(p.size, dtype=torch.float64) - (p.size - 1) / 2) * p.spacing
    modes = torch.cartesian_prod(axis, axis)
    return _mixture(modes, p.noise, p.n, g)


def _mixture(modes: Tensor, std: float, n: int, g: torch.Generator) -> Sample:
    y = torch.randint(len(modes), (n,), generator=g)
    x = modes[y] + std * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return Sample(x, y, len(modes), {"modes": modes.to(torch.float32), "mode_std": std})


def _moons(p: MoonsParams, g: torch.Generator) -> Sample:
    """Two interleaved half circles ``(cos t, sin t)`` and ``(1 - cos t, ½ - sin t)``, t ~ U[0, π]
    (scikit-learn's make_moons)."""
    y = torch.arange(p.n) % 2
    t = math.pi * torch.rand(p.n, generator=g, dtype=torch.float64)
    outer = torch.stack([t.cos(), t.sin()], 1)
    inner = torch.stack([1 - t.cos(), 0.5 - t.sin()], 1)
    x = torch.where(y[:, None] == 0, outer, inner)
    return Sample(x + p.noise * torch.randn(p.n, 2, generator=g, dtype=torch.float64), y, 2)


def _circles(p: CirclesParams, g: torch.Generator) -> Sample:
    """Two concentric circles of radii 1 and ``factor`` plus Gaussian noise
    (scikit-learn's make_circles)."""
    y = torch.arange(p.n) % 2
    t = 2 * math.pi * torch.rand(p.n, generator=g, dtype=torch.float64)
    radius = torch.where(y == 0, 1.0, p.factor).to(torch.float64)
    x = radius[:, None] * torch.stack([t.cos(), t.sin()], 1)
    x = x + p.noise * torch.randn(p.n, 2, generator=g, dtype=torch.float64)
    return Sample(x, y, 2, {"radii": [1.0, p.factor]})


def _checkerboard(p: ToyParams, g: torch.Generator) -> Sample:
    """Uniform on the 8 dark cells of a 4×4 checkerboard over ``[-4, 4]²``
    (Grathwohl et al., 2019, "FFJORD")."""
    x1 = 4 * torch.rand(p.n, generator=g, dtype=torch.float64) - 2
    x2 = torch.rand(p.n, generator=g, dtype=torch.float64) - 2 * torch.randint(2, (p.n,), generator=g)
    x2 = x2 + torch.floor(x1) % 2
    column, row = torch.floor(x1).long() + 2, torch.floor(x2).long() + 2
    return Sample(2 * torch.stack([x1, x2], 1), column * 2 + row // 2, 8)


def _pinwheel(p: PinwheelParams, g: torch.Generator) -> Sample:
    """Pinwheel arms ``2·R(θ_k + rate·e^{r})·(r, t)``, r ~ N(1, radial_std²), t ~ N(0, noise²)
    (Johnson et al., 2016, "Composing graphical models with neural networks")."""
    y = torch.arange(p.n) % p.arms
    features = torch.randn(p.n, 2, generator=g, dtype=torch.float64) * torch.tensor([p.radial_std, p.noise])
    features[:, 0] += 1
    angles = 2 * math.pi * y / p.arms + p.rate * features[:, 0].exp()
    cos, sin = angles.cos(), angles.sin()
    rotations = torch.stack([cos, -sin, sin, cos], 1).reshape(-1, 2, 2)
    return Sample(2 * torch.einsum("ti,tij->tj", features, rotations), y, p.arms)


def _swiss_roll(p: SwissRollParams, g: torch.Generator) -> Sample:
    """The swiss roll's (x, z) plane: ``(t cos t, t sin t)/5``, t ~ U[1.5π, 4.5π]
    (scikit-learn's make_swiss_roll; Grathwohl et al., 2019, "FFJORD")."""
    t = 1.5 * math.pi * (1 + 2 * torch.rand(p.n, generator=g, dtype=torch.float64))
    x = torch.stack([t * t.cos(), t * t.sin()], 1)
    return Sample((x + p.noise * torch.randn(p.n, 2, generator=g, dtype=torch.float64)) / 5)


def _rings(p: RingsParams, g: torch.Generator) -> Sample:
    """Concentric circles of radii ``3k/rings``, k = 1..rings, with radial noise
    (Grathwohl et al., 2019, "FFJORD")."""
    y = torch.randint(p.rings, (p.n,), generator=g)
    radii = 3 * torch.arange(1, p.rings + 1, dtype=torch.float64) / p.rings
    t = 2 * math.pi * torch.rand(p.n, generator=g, dtype=torch.float64)
    r = radii[y] + p.noise * torch.randn(p.n, generator=g, dtype=torch.float64)
    x = r[:, None] * torch.stack([t.cos(), t.sin()], 1)
    return Sample(x, y, p.rings, {"radii": radii.tolist(), "mode_std": p.noise})


def _two_spirals(p: TwoSpiralsParams, g: torch.Generator) -> Sample:
    """Two opposite spirals ``±(-m cos m, m sin m)/3``, m = 3π·√u
    (Grathwohl et al., 2019, "FFJORD")."""
    y = torch.arange(p.n) % 2
    m = torch.sqrt(torch.rand(p.n, generator=g, dtype=torch.float64)) * 3 * math.pi
    jitter = 0.5 * torch.rand(p.n, 2, generator=g, dtype=torch.float64)
    spiral = torch.stack([-m.cos() * m, m.sin() * m], 1) + jitter
    x = (1 - 2 * y)[:, None] * spiral / 3
    return Sample(x + p.noise * torch.randn(p.n, 2, generator=g, dtype=torch.float64), y, 2)


@functools.cache  # the same type at each call of compose_gen_types, so one reached twice is kept once
def _toy_type(name: str, params: type[ToyParams], sample: Callable[..., Sample]) -> ComponentType:
    def build(p: ToyParams, ctx: BuildContext | None = None) -> Splits:
        drawn = sample(p, seeded_generator(p.seed, f"toy/{name}"))
        if not bool(drawn.x.isfinite().all()) or float32_overflow(drawn.x) is not None:  # the user's parameters, not the plugin
            chosen = ", ".join(f"{k}: {v}" for k, v in p.model_dump().items() if k not in ("type", "seed", "test_fraction", "transforms"))
            raise DatasetError(f"{name} with {chosen} makes points that are not finite or are {BEYOND_FLOAT32}: choose smaller values")
        fields = {"x": drawn.x} if drawn.y is None else {"x": drawn.x, "y": drawn.y}
        train, test = split_fields(fields, p)
        return make_splits(p, train, test, DataSpace(num_classes=drawn.num_classes, meta=dict(drawn.meta)))

    doc = " ".join((sample.__doc__ or "").split())
    return ComponentType(name, "dataset", params, build, doc=doc)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        _toy_type("eight_gaussians", EightGaussiansParams, _eight_gaussians),
        _toy_type("gaussian_grid", GaussianGridParams, _gaussian_grid),
        _toy_type("moons", MoonsParams, _moons),
        _toy_type("circles", CirclesParams, _circles),
        _toy_type("checkerboard", ToyParams, _checkerboard),
        _toy_type("pinwheel", PinwheelParams, _pinwheel),
        _toy_type("swiss_roll", SwissRollParams, _swiss_roll),
        _toy_type("rings", RingsParams, _rings),
        _toy_type("two_spirals", TwoSpiralsParams, _two_spirals),
    ]
