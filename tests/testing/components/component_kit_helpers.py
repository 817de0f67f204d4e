"""Shared by the component kit's tests: the shipped components' configurations, a build context, a batch of data."""

from __future__ import annotations

import torch
from torch import nn

import compose_gen as cg
from compose_gen import Loss

# --------------------------------------------------------------------------- the shipped components


class Inline:
    """A build context without data: ``{type: ...}`` references are built from the catalogue."""

    data = None
    sampler = None

    def __init__(self, catalogue: cg.Catalogue) -> None:
        self.catalogue = catalogue

    def component(self, ref: dict) -> nn.Module:
        params = dict(ref)
        kind = self.catalogue.get(params.pop("type"))
        return kind.build(kind.params.model_validate(params), self)

    def loss(self, name: str) -> Loss:
        raise AssertionError(f"no losses here ({name!r})")


def mlp(i: int, o: int, context: int = 0) -> dict:
    return {"type": "mlp", "in_features": i, "out_features": o, "hidden": [8], "context_features": context}


def decoders(c: int) -> dict[str, dict]:
    """Every shipped decoder type (some in several configurations): z of 3 features, x of 6 values (or 3x2x2)."""
    return {
        "bernoulli": {"type": "bernoulli_decoder", "net": mlp(3, 6, c), "event_shape": [6]},
        "continuous_bernoulli": {"type": "continuous_bernoulli_decoder", "net": mlp(3, 6, c), "event_shape": [6]},
        "gaussian_learned": {"type": "gaussian_decoder", "net": mlp(3, 6, c), "event_shape": [6]},
        "gaussian_predicted": {"type": "gaussian_decoder", "net": mlp(3, 12, c), "event_shape": [6], "scale": "predicted"},
        "gaussian_fixed": {"type": "gaussian_decoder", "net": mlp(3, 6, c), "event_shape": [6], "scale": "fixed"},
        "categorical": {"type": "categorical_decoder", "net": mlp(3, 24, c), "event_shape": [6], "bins": 4},
        "discretized_logistic": {"type": "discretized_logistic_decoder", "net": mlp(3, 36, c), "event_shape": [6], "bins": 8, "components": 2},
        "discretized_logistic_rgb": {
            "type": "discretized_logistic_decoder",
            "net": mlp(3, 80, c),
            "event_shape": [3, 2, 2],
            "bins": 8,
            "components": 2,
            "channel_coupling": True,
        },
    }


def encoders(c: int) -> dict[str, dict]:
    iaf = {"type": "iaf", "shape": [3], "hidden": [8], "context_features": 4}
    return {
        "gaussian": {"type": "gaussian_encoder", "net": mlp(6, 6, c), "latent": 3},
        "flow": {"type": "flow_encoder", "net": mlp(6, 10, c), "latent": 3, "context_features": 4, "bijectors": [iaf]},
    }


def flow_prior(context: int = 0) -> dict:
    coupling = {"type": "affine_coupling", "shape": [3], "hidden": [8], "context_features": context}
    return {"type": "flow", "base": {"type": "standard_normal", "shape": [3]}, "bijectors": [coupling, {"type": "actnorm", "shape": [3]}]}


PRIORS = {
    "standard_normal": {"type": "standard_normal", "shape": [3]},
    "diagonal_normal": {"type": "diagonal_normal", "shape": [3]},
    "gaussian_mixture": {"type": "gaussian_mixture", "latent": 3, "components": 4},
    "flow": flow_prior(),
}



# --------------------------------------------------------------------------- a batch of data


X = torch.randn(6, 2)

