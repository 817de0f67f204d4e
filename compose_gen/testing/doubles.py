"""Test doubles for metric tests: stand-ins for a compiled model's ``sample(n, temperature)``.

They follow the :class:`compose_gen.Sampler` contract, so any metric can be
tested without training a model.  They are stand-ins, not models to copy: each
ignores the temperature and draws from a generator of its own (a sequence of
calls repeats, not one call), which ``check_sampler`` refuses in a real sampler::

    model = FixedSampler(train_x[:30], noise=1e-3)          # a collapsed generator
    model = FixedSampler(train_x, labels=train_y)           # a perfect class-conditional model
    model = DistributionSampler(torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), 1.0), 1))
    metric(EvalContext(model=model, data=splits, device=torch.device("cpu"), out_dir=tmp_path))
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution

from compose_gen.core import ClassConditions, Sampler

__all__ = ["DistributionSampler", "FixedSampler"]


class FixedSampler(Sampler):
    """Draws from a fixed pool of points, optionally with Gaussian noise of std ``noise``.

    ``replace=True`` draws each example uniformly with replacement (a generator
    whose support is the pool); ``replace=False`` draws distinct pool rows within
    one call (e.g. fresh-looking "real data" samples; ``n`` must not exceed the
    pool).  Seeded and reproducible; ``temperature`` is ignored.  Moves with ``.to(device)``.

    Given the pool's integer ``labels``, it samples by class like a class-conditional
    model: example ``i`` is a pool row of class ``i mod classes`` (with replacement).
    """

    def __init__(
        self, points: Tensor, noise: float = 0.0, replace: bool = True, seed: int = 0, labels: Tensor | None = None
    ) -> None:
        super().__init__()
        self.register_buffer("points", points.detach().clone())
        self.noise, self.replace = noise, replace
        self.generator = torch.Generator().manual_seed(seed)
        self.by_class: list[Tensor] = []
        if labels is not None:
            self.by_class = [torch.nonzero(labels == k).flatten() for k in range(int(labels.max()) + 1)]
            if any(len(rows) == 0 for rows in self.by_class):
                raise ValueError("labels must hold every class 0..max(labels) at least once")
            self.conditions = ClassConditions("y", len(self.by_class))

    def sample(self, n: int, temperature: float = 1.0, context: Tensor | None = None) -> Tensor:
        if self.by_class:
            pools = [self.by_class[i % len(self.by_class)] for i in range(n)]
            index = torch.stack([rows[torch.randint(len(rows), (), generator=self.generator)] for rows in pools])
        elif self.replace:
            index = torch.randint(len(self.points), (n,), generator=self.generator)
        elif n <= len(self.points):
            index = torch.randperm(len(self.points), generator=self.generator)[:n]
        else:
            raise ValueError(f"FixedSampler without replacement: asked for {n} of {len(self.points)} points")
        chosen = self.points[index.to(self.points.device)]
        noise = torch.randn(chosen.shape, generator=self.generator, dtype=chosen.dtype).to(chosen.device)
        return chosen + self.noise * noise


class DistributionSampler(Sampler):
    """Draws from a ``torch.distributions`` object, seeded (global RNG forked per call); ignores temperature."""

    def __init__(self, distribution: Distribution, seed: int = 0) -> None:
        super().__init__()
        self.distribution = distribution
        self.seed = seed
        self.calls = 0

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + self.calls)
            self.calls += 1
            return self.distribution.sample((n,))
