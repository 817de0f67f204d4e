"""Plain networks: the multi-layer perceptron.

Networks are deterministic modules (kind ``network``) that encoders, decoders,
generators, critics and conditioners take by reference.  Their input and output
may be vectors or shaped events: ``in_features: [1, 8, 8]`` flattens the three
trailing dimensions, ``out_features: [1, 8, 8]`` reshapes the output; any number
of leading batch or sample dimensions pass through.  A network with
``context_features`` is called ``net(x, context)`` and reads the context vector
beside its input (a conditional VAE's encoder and decoder, Sohn et al. 2015).
"""

from __future__ import annotations

import math
import warnings
from itertools import pairwise
from typing import Callable, Literal, TypeVar

import torch
from pydantic import Field
from torch import Tensor, nn

from compose_gen import BuildContext, ComponentType, Params, Size, SpecWarning, hookimpl

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "MLPParams",
    "OUTPUT_RANGES",
    "Output",
    "activation_after_linear",
    "broadcast_context",
    "caution_output_range",
    "conditioned",
    "context_rows",
    "output_activation",
]

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
Features = list[Size] | Size
_IN_PLACE = {"relu", "leaky_relu", "elu", "silu"}
T = TypeVar("T")


def activation_after_linear(name: Activation) -> nn.Module:
    """The activation for the output of a linear or convolutional layer, in place where torch offers it.

    Such a layer's backward needs only its input, so its output may be
    overwritten: one activation-sized allocation fewer per layer.  Feed such
    layers matrices: ``nn.Linear`` returns a *view* for inputs of more
    dimensions, and an in-place op on a view makes autograd copy the whole base.
    """
    kind = ACTIVATIONS[name]
    return kind(inplace=True) if name in _IN_PLACE else kind()


def output_activation(name: Output) -> nn.Module:
    """The module squashing a network's output: ``sigmoid`` into (0, 1), ``tanh`` into (−1, 1), or ``none``."""
    return {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "none": nn.Identity}[name]()


#: The open interval of values each bounded output activation gives.
OUTPUT_RANGES: dict[str, tuple[float, float]] = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}


def caution_output_range(output: Output, shape: tuple[int, ...], ctx: BuildContext) -> None:
    """Warn when ``output`` squashes into a range that the data a network of output ``shape`` imitates leave (a
    generator, a decoder's mean): a sigmoid generator of data in [−1, 1] never makes the negative half, and its critic
    tells fakes by range alone.

    The data it may imitate are the dataset's floating fields of its output's size (``x``; a two-domain set's ``a``
    and ``b``), and it is warned of only when none fits.  Values past a bound by less than 1% of the range's width
    (rounding, a stray pixel) fit.
    """
    bounds, data = OUTPUT_RANGES.get(output), getattr(ctx, "data", None)
    if bounds is None or data is None:
        return
    low, high = bounds
    slack = 0.01 * (high - low)
    outside = {
        name: float(((values < low - slack) | (values > high + slack)).float().mean())
        for name, values in data.train.fields.items()
        if values.is_floating_point() and math.prod(values.shape[1:]) == math.prod(shape)
    }
    if not outside or min(outside.values()) == 0:
        return
    name = min(outside, key=outside.__getitem__)
    values = data.train.fields[name]
    least, most = float(values.min()), float(values.max())
    fits = next((o for o, (a, b) in OUTPUT_RANGES.items() if a - slack <= least and most <= b + slack), "none")
    warnings.warn(SpecWarning(
        f"output: {output} gives values in ({low:g}, {high:g}), but {100 * outside[name]:.3g}% of the data's {name} lie outside it "
        f"(they span [{least:g}, {most:g}]), which its samples can never reach: use output: {fits}, or transform the data into "
        "the output's range"
    ), stacklevel=2)


def broadcast_context(context: Tensor | None, batch_shape: torch.Size, features: int, owner: str) -> Tensor | None:
    """``context`` (``[..., features]``) expanded to ``batch_shape``, or ``None`` when ``features == 0``.

    A bijector with no context features ignores a context (a flow's chain passes
    it to every link); a conditional module needs one whose leading dimensions
    broadcast to the input's.
    """
    if features == 0:
        return None
    if context is None:
        raise ValueError(
            f"{owner} is conditional: it needs a context of {features} features, got none "
            "(its caller passes one when a loss names a `context:`, to the parts its `conditioned` lists)"
        )
    if context.shape[-1:] != (features,):
        raise ValueError(f"{owner} expects a context of {features} features, got shape {tuple(context.shape)}")
    try:
        return context.expand(*batch_shape, features)
    except RuntimeError:
        raise ValueError(
            f"{owner}: context of shape {tuple(context.shape)} does not broadcast to batch shape {tuple(batch_shape)}"
        ) from None


class MLPParams(Params):
    in_features: Features = Field(..., description="input size, or the event shape to flatten")
    out_features: Features = Field(..., description="output size, or the event shape to reshape to")
    hidden: list[Size] = Field(default_factory=lambda: [256, 256], description="widths of the hidden layers")
    activation: Activation = Field("relu", description="activation σ after each hidden layer")
    output: Output = Field("none", description="squashing of the output: sigmoid for [0, 1], tanh for [-1, 1]")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability after each hidden activation")
    context_features: int = Field(0, ge=0, description="size of a context vector read beside the input: net(x, context)")


class MLP(nn.Module):
    """Multi-layer perceptron ``h_{l+1} = σ(W_l h_l + b_l)`` with a linear last layer.

    The universal function approximator of Rumelhart et al. (1986); ``output``
    optionally squashes the result (sigmoid for pixels in [0, 1], tanh for [-1, 1]).
    With ``context_features`` the first layer reads ``h_0 = [x ‖ c]``.
    """

    def __init__(
        self,
        in_features: Features,
        out_features: Features,
        hidden: list[int] | tuple[int, ...] = (256, 256),
        activation: Activation = "relu",
        output: Output = "none",
        dropout: float = 0.0,
        context_features: int = 0,
    ) -> None:
        super().__init__()
        self.in_shape = _shape(in_features)
        self.out_shape = _shape(out_features)
        self.in_features = math.prod(self.in_shape)
        self.context_features = context_features
        sizes = [self.in_features + context_features, *hidden, math.prod(self.out_shape)]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(pairwise(sizes)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(activation_after_linear(activation))
                if dropout:
                    layers.append(nn.Dropout(dropout))
        if output != "none":
            layers.append(output_activation(output))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        batch = x.shape[: x.dim() - len(self.in_shape)]
        if x.shape[len(batch) :] != self.in_shape:
            ends = tuple(x.shape[x.dim() - len(self.in_shape) :])  # the leading dimensions may be draws a loss added (IWAE's k)
            flat = len(self.in_shape) == 1 and any(math.prod(x.shape[i:]) == self.in_features for i in range(1, x.dim() - 1))
            hint = (  # images (C, H, W) of as many values as the mlp reads
                "; to read images as vectors, give the dataset `shape: flat` or a `flatten` transform" if flat else ""
            )
            raise ValueError(
                f"mlp expects inputs of shape (..., {', '.join(map(str, self.in_shape))}), got {tuple(x.shape)}, which ends in {ends}{hint}"
            )
        matrix = (math.prod(batch), self.in_features)  # nn.Linear would return views, which in-place activations must not hit
        h = x if x.shape == matrix else x.reshape(matrix)
        if self.context_features or context is not None:
            h = torch.cat([h, context_rows(context, batch, self.context_features, "mlp", h.dtype)], dim=-1)
        y = self.net(h)
        shape = (*batch, *self.out_shape)
        return y if y.shape == shape else y.reshape(shape)


def conditioned(call: Callable[..., T], inputs: Tensor, context: Tensor | None) -> T:
    """``call(inputs)``, or ``call(inputs, context)`` given a context, so an unconditional component is called as before."""
    return call(inputs) if context is None else call(inputs, context)


def context_rows(context: Tensor | None, batch: torch.Size, features: int, owner: str, dtype: torch.dtype) -> Tensor:
    """``context`` broadcast to ``batch`` as a ``dtype`` matrix of ``features`` columns, to concatenate to a network's input.

    A network with no context features refuses a context rather than ignore it.
    """
    if features == 0:
        raise ValueError(f"{owner} takes no context (context_features is 0), but one of shape {tuple(context.shape)} was given")
    return broadcast_context(context, batch, features, owner).reshape(-1, features).to(dtype)


def _shape(features: Features) -> tuple[int, ...]:
    return (features,) if isinstance(features, int) else tuple(features)


def build_mlp(p: MLPParams, ctx: BuildContext) -> MLP:
    """Multi-layer perceptron with configurable widths, activation and output squashing.

    f(x [, c]) = a(W_L h_{L−1} + b_L),  h_l = dropout(σ(W_l h_{l−1} + b_l)),  h_0 = [x ‖ c] (x flattened to in_features, c a
    context of context_features), σ the activation, a the output squashing (none by default).

    Rumelhart et al. 1986, "Learning representations by back-propagating errors".
    """
    if math.prod(_shape(p.out_features)) > 1:  # one squashed number is a critic's probability, not an example of 1-D data
        caution_output_range(p.output, _shape(p.out_features), ctx)
    return MLP(p.in_features, p.out_features, p.hidden, p.activation, p.output, p.dropout, p.context_features)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [ComponentType("mlp", "network", MLPParams, build_mlp)]
