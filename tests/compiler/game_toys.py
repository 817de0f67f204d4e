"""A toy two-player game for the compiler's tests: a minimal adversarial loss and a GAN spec using it."""

from __future__ import annotations

import pytest
import torch

from compose_gen import ComponentType, Loss, Params, Ref, Value
from compose_gen.runtime import build
from compose_gen.spec import SpecError, load_spec
from compose_gen.testing.plugins import plugin


class ToyAdversarialParams(Params):
    critic: Ref("network")  # type: ignore[valid-type]
    real: Value = "x"
    fake: Value


class ToyAdversarial(Loss):
    """A minimal two-sided loss: the critic separates real from fake, the generator fools it."""

    terms = ("critic", "generator")
    term_inputs = {"generator": ("fake",)}
    opposed = ("critic", "generator")

    def __init__(self, critic: torch.nn.Module) -> None:
        super().__init__()
        self.critic = critic

    def forward(self, inputs, terms):
        out = {}
        if "critic" in terms:
            out["critic"] = self.critic(inputs["fake"]).mean() - self.critic(inputs["real"]).mean()
        if "generator" in terms:
            out["generator"] = -self.critic(inputs["fake"]).mean()
        return out


TOY = plugin(
    ComponentType("toy_adversarial", "loss", ToyAdversarialParams, lambda p, ctx: ToyAdversarial(ctx.component(p.critic)), doc="Toy."),
    name="toy",
)


def toy_gan_spec() -> dict:
    """A GAN of two small MLPs on eight Gaussians, each side its own player (the critic two steps a round), and a graph
    value ``unused`` that no term reads."""
    return {
        "name": "toy_gan",
        "data": {"type": "eight_gaussians", "n": 256},
        "components": {
            "noise": {"type": "standard_normal", "shape": [2]},
            "generator": {"type": "mlp", "in_features": 2, "out_features": 2, "hidden": [16]},
            "critic": {"type": "mlp", "in_features": 2, "out_features": 1, "hidden": [16]},
        },
        "graph": {"z": "noise.sample(x)", "fake": "generator(z)", "unused": "critic(x)"},
        "losses": {"adv": {"type": "toy_adversarial", "critic": "critic", "fake": "fake"}},
        "players": {
            "critic": {"params": ["critic"], "terms": ["adv.critic"], "steps": 2},
            "generator": {"params": ["generator"], "terms": {"adv.generator": 1.0}},
        },
        "train": {"steps": 5, "batch_size": 32},
    }


def errors(spec: dict, catalogue) -> str:
    """The message of the :class:`SpecError` that building ``spec`` raises (the test fails if it builds)."""
    with pytest.raises(SpecError) as info:
        build(load_spec(spec, catalogue=catalogue), "cpu")
    return str(info.value)
