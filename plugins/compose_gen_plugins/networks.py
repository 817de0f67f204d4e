"""Plain networks: the multi-layer perceptron.

Networks are deterministic modules (kind ``network``) that encoders, decoders,
generators, critics and conditioners take by reference.  Their input and output
may be vectors or shaped events: ``in_features: [1, 8, 8]`` flattens the three
trailing dimensions, ``out_features: [1, 8, 8]`` reshapes the output; any number
of leading batch or sample dimensions pass through.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from compose_gen import BuildContext, ComponentType, Params, hookimpl

__all__ = ["ACTIVATIONS", "MLP", "MLPParams", "activation_after_linear"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
}
Activation = Literal["relu", "leaky_relu", "elu", "silu", "gelu", "tanh", "softplus"]
Output = Literal["none", "sigmoid", "tanh"]
Features = int | list[int]
_IN_PLACE = {"relu", "leaky_relu", "elu", "silu"}


def activation_after_linear(name: Activation) -> nn.Module:
    """The activation for the output of a linear or convolutional layer, in place where torch offers it.

    Such a layer's backward needs only its input, so its output may be
    overwritten: one activation-sized allocation fewer per layer.  Feed such
    layers matrices: ``nn.Linear`` returns a *view* for inputs of more
    dimensions, and an in-place op on a view makes autograd copy the whole base.
    """
    kind = ACTIVATIONS[name]
    return kind(inplace=True) if name in _IN_PLACE else kind()


class MLPParams(Params):
    in_features: Features = Field(..., description="input size, or the event shape to flatten")
    out_features: Features = Field(..., description="output size, or the event shape to reshape to")
    hidden: list[int] = Field(default_factory=lambda: [256, 256], description="widths of the hidden layers")
    activation: Activation = Field("relu", description="activation σ after each hidden layer")
    output: Output = Field("none", description="squashing of the output: sigmoid for [0, 1], tanh for [-1, 1]")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability after each hidden activation")


class MLP(nn.Module):
    """Multi-layer perceptron ``h_{l+1} = σ(W_l h_l + b_l)`` with a linear last layer.

    The universal function approximator of Rumelhart et al. (1986); ``output``
    optionally squashes the result (sigmoid for pixels in [0, 1], tanh for [-1, 1]).
    """

    def __init__(
        self,
        in_features: Features,
        out_features: Features,
        hidden: list[int] | tuple[int, ...] = (256, 256),
        activation: Activation = "relu",
        output: Output = "none",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_shape = _shape(in_features)
        self.out_shape = _shape(out_features)
        self.in_features = math.prod(self.in_shape)
        sizes = [self.in_features, *hidden, math.prod(self.out_shape)]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(pairwise(sizes)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(activation_after_linear(activation))
                if dropout:
                    layers.append(nn.Dropout(dropout))
        if output != "none":
            layers.append(nn.Sigmoid() if output == "sigmoid" else nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[: x.dim() - len(self.in_shape)]
        if x.shape[len(batch) :] != self.in_shape:
            raise ValueError(f"mlp expects inputs of shape (..., {', '.join(map(str, self.in_shape))}), got {tuple(x.shape)}")
        matrix = (math.prod(batch), self.in_features)  # nn.Linear would return views, which in-place activations must not hit
        y = self.net(x if x.shape == matrix else x.reshape(matrix))
        shape = (*batch, *self.out_shape)
        return y if y.shape == shape else y.reshape(shape)


def _shape(features: Features) -> tuple[int, ...]:
    return (features,) if isinstance(features, int) else tuple(features)


def build_mlp(p: MLPParams, ctx: BuildContext) -> MLP:
    """Multi-layer perceptron with configurable widths, activation and output squashing."""
    return MLP(p.in_features, p.out_features, p.hidden, p.activation, p.output, p.dropout)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [ComponentType("mlp", "network", MLPParams, build_mlp)]
