"""An exponential moving average of some components' weights, for sampling and evaluation.

After every optimizer step that changes them, ``avg ← d_t·avg + (1 − d_t)·θ`` for the weights it changed
(Polyak & Juditsky 1992; for GAN generators Yazıcı et al. 2019, Karras et al. 2018),
starting from the initial weights.  With ``warmup`` the rate ramps up as in
TensorFlow's ``ExponentialMovingAverage``: at training round t,
``d_t = min(decay, (1 + t) / (10 + t))``, so a run much shorter than
``1 / (1 − decay)`` steps does not average mostly its initial weights (at
decay 0.999 and a constant rate, 82% of the average after 200 steps would still
be θ_0).  The averages are buffers of a submodule ``ema`` of the model, so
checkpoints hold them; the rate follows the round, which checkpoints hold too.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["WeightAverage"]


class _Shadow(nn.Module):
    """The averaged copies of one component's parameters, as buffers ``p0, p1, ...``."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        super().__init__()
        for i, p in enumerate(params):
            self.register_buffer(f"p{i}", p.detach().clone())


class WeightAverage(nn.Module):
    """Averages of the parameters of ``components`` (name → module) with the given ``decay``."""

    def __init__(self, components: dict[str, nn.Module], decay: float, warmup: bool = True) -> None:
        super().__init__()
        self.decay, self.warmup = decay, warmup
        live = {name: list(module.parameters()) for name, module in components.items()}
        self.shadows = nn.ModuleDict({name: _Shadow(params) for name, params in live.items()})
        self._live = [p for params in live.values() for p in params]
        self.param_ids = frozenset(map(id, self._live))
        #: For each set of parameter ids a step updated (a player's), the positions of the averaged ones among them.
        self._moved: dict[frozenset[int], list[int]] = {}

    def _averages(self) -> list[torch.Tensor]:
        return [b for shadow in self.shadows.values() for b in shadow.buffers()]

    def rate(self, step: int) -> float:
        """The decay d_t at training round ``step``."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def restart(self) -> None:
        """Start the averages afresh from the current weights (a run that was trained without them)."""
        for average, p in zip(self._averages(), self._live, strict=True):
            average.copy_(p.detach())

    @torch.no_grad()
    def update(self, step: int, changed: frozenset[int] | None = None) -> None:
        """One step towards the current weights, at training round ``step``, of the averages of the parameters whose
        ids are in ``changed`` (those an optimizer step updated; by default all): an average moves only with its weights."""
        if changed is None:
            moved: list[int] | range = range(len(self._live))
        elif (moved := self._moved.get(changed)) is None:  # found once per player, not on every step
            moved = self._moved[changed] = [i for i, p in enumerate(self._live) if id(p) in changed]
        averages = self._averages()
        torch._foreach_lerp_([averages[i] for i in moved], [self._live[i].detach() for i in moved], 1.0 - self.rate(step))

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in place of the live ones; the live ones are restored exactly after."""
        with torch.no_grad():
            saved = [p.detach().clone() for p in self._live]
            for p, avg in zip(self._live, self._averages(), strict=True):
                p.copy_(avg)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, value in zip(self._live, saved, strict=True):
                    p.copy_(value)
