"""What the tests of the adversarial losses and their companions share: a catalogue of both plugins, a build that
hands a loss its critic directly, and critics whose scores the test chooses."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from compose_gen import make_catalogue
from compose_gen_plugins import adversarial, gan_auxiliary

CATALOGUE = make_catalogue([adversarial, gan_auxiliary], entry_points=False)
REAL = [1.0, 3.0]
FAKE = [-2.0, 0.5]
BOTH = frozenset({"critic", "generator"})


class Context:
    def __init__(self, **components: nn.Module) -> None:
        self.components = components
        self.data = None

    def component(self, ref: str) -> nn.Module:
        return self.components[ref]


class ScoreIsInput(nn.Module):
    """D(x) = x (and features(x) = x): scores are whatever the test feeds in."""

    def forward(self, x: Tensor) -> Tensor:
        return x

    def features(self, x: Tensor) -> Tensor:
        return x


class Recorder(nn.Module):
    """Returns the sum of its first input's last dim and records every call's arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Tensor, ...]] = []

    def forward(self, *args: Tensor) -> Tensor:
        self.calls.append(args)
        return args[0].sum(-1, keepdim=True)


def build(type_name: str, critic: nn.Module | None = None, **params: object):
    component_type = CATALOGUE.get(type_name)
    spec = {"critic": "critic", **params} if critic is not None else params
    return component_type.build(component_type.params(**spec), Context(critic=critic))


def inputs(real: list[float] = REAL, fake: list[float] = FAKE, **extra: Tensor) -> dict[str, Tensor]:
    as_column = lambda v: torch.tensor(v, dtype=torch.float64).unsqueeze(-1)  # noqa: E731
    return {"real": as_column(real), "fake": as_column(fake), **extra}


def mean(values: list[float]) -> float:
    return sum(values) / len(values)
