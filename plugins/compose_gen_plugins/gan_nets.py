"""GAN generators and critics: MLP ones here, and the parts the convolutional ones share.

Options (for these and :mod:`compose_gen_plugins.convnets`): spectral normalisation of
every weight layer (Miyato et al. 2018), a normalisation layer, class-conditional inputs
(cGAN, Mirza & Osindero 2014; a label embedding concatenated to ``z``, and for critics
either concatenation or the projection ``ψ(h) + embed(y)·h`` of Miyato & Koyama 2018),
an auxiliary classifier head (AC-GAN, Odena et al. 2017) and a joint critic ``D(x, z)``
(BiGAN, Donahue et al. 2017; ALI, Dumoulin et al. 2017).  Call forms::

    generator(z)        generator(z, y)                  # y: integer class labels
    critic(x)   critic(x, y)   critic(x, z)   critic(x, z, y)
    critic.features(...)    # the representation under the output layer (feature matching)

A critic returns scores of shape ``(..., out_features)``, or ``(scores, class_logits)``
when it has an auxiliary classifier.  Every network broadcasts over extra leading dims.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Callable, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from compose_gen import BuildContext, ComponentType, Params, hookimpl
from compose_gen_plugins.networks import context_rows

__all__ = [
    "Critic",
    "CriticOptions",
    "Generator",
    "GeneratorOptions",
    "Output",
    "critic_extra_features",
    "data_shape",
    "generator_in_features",
    "output_activation",
    "spectral",
]

Output = Literal["tanh", "sigmoid", "none"]
VectorNorm = Literal["batch", "layer", "none"]


def spectral(layer: nn.Module, enabled: bool) -> nn.Module:
    """``layer`` with its weight spectrally normalised (Miyato et al. 2018) when ``enabled``."""
    return _spectral_norm(layer) if enabled else layer


def output_activation(name: Output) -> nn.Module:
    return {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "none": nn.Identity}[name]()


def data_shape(ctx: BuildContext, given: list[int] | None, field: str, type_name: str) -> tuple[int, ...]:
    """``given``, or the event shape of the dataset's ``x`` when it is not set."""
    if given is not None:
        return tuple(given)
    data = getattr(ctx, "data", None)
    if data is None or "x" not in data.train.fields:
        raise ValueError(f"{type_name}: set {field!r}; there is no dataset field 'x' to take it from")
    return tuple(data.train.event_shape("x"))


class ConditionalOptions(Params):
    num_classes: int | None = Field(None, ge=2, description="condition on integer labels y in 0..num_classes-1 (cGAN)")
    embed_dim: int | None = Field(
        None, ge=1, description="size of the label embedding concatenated to the input (default: num_classes)"
    )

    @model_validator(mode="after")
    def _embed_needs_classes(self) -> "ConditionalOptions":
        if self.embed_dim is not None and self.num_classes is None:
            raise ValueError("embed_dim needs num_classes")
        return self


class GeneratorOptions(ConditionalOptions):
    latent_dim: int = Field(ge=1, description="size of z")
    context_features: int = Field(
        0, ge=0, description="size of a context vector concatenated to z, G(z, c) (a conditional VAE's decoder)"
    )
    spectral_norm: bool = Field(False, description="spectral normalisation of every weight layer (Miyato et al. 2018)")
    output: Output = Field("none", description="output activation: tanh for data in [-1, 1], sigmoid for [0, 1]")

    @model_validator(mode="after")
    def _labels_or_context(self) -> "GeneratorOptions":
        if self.num_classes is not None and self.context_features:
            raise ValueError("num_classes (integer labels) and context_features (a context vector) exclude each other")
        return self


class CriticOptions(ConditionalOptions):
    conditioning: Literal["projection", "concat"] = Field(
        "projection", description="how labels enter: projection (Miyato & Koyama 2018) or concatenation"
    )
    joint_dim: int | None = Field(None, ge=1, description="size of z for a joint critic D(x, z) (BiGAN)")
    ac_classes: int | None = Field(None, ge=2, description="auxiliary classifier head with this many classes (AC-GAN)")
    out_features: int = Field(1, ge=1, description="scores per input (size of the output layer)")
    spectral_norm: bool = Field(False, description="spectral normalisation of every weight layer (Miyato et al. 2018)")

    @model_validator(mode="after")
    def _embed_only_for_concat(self) -> "CriticOptions":
        if self.embed_dim is not None and self.conditioning != "concat":
            raise ValueError("embed_dim applies to conditioning: concat (projection embeds labels in the feature size)")
        return self


def generator_in_features(options: GeneratorOptions) -> int:
    """Size of a generator body's input: ``z`` and the label embedding or the context."""
    return options.latent_dim + ((options.embed_dim or options.num_classes) if options.num_classes else options.context_features)


def critic_extra_features(options: CriticOptions) -> int:
    """Size of what a critic body receives next to ``x``: ``z`` and a concatenated label embedding."""
    concat = options.num_classes is not None and options.conditioning == "concat"
    return (options.joint_dim or 0) + ((options.embed_dim or options.num_classes) if concat else 0)


def _labels(y: Tensor | None, num_classes: int | None, who: str, batch: torch.Size) -> Tensor | None:
    """Labels as a flat long tensor over ``batch`` (broadcast, so ``y (B,)`` serves ``z (S, B, d)``)."""
    if num_classes is None:
        if y is not None:
            raise TypeError(f"{who} is not conditional (num_classes is unset) but got labels")
        return None
    if y is None:
        raise TypeError(f"{who} is conditional (num_classes={num_classes}): pass the labels y")
    if y.dim() > len(batch) or y.is_floating_point():
        raise TypeError(
            f"{who} takes integer labels y (num_classes={num_classes}), got a {y.dtype} tensor of shape {tuple(y.shape)}: "
            "pass y itself, or give it context_features to read a vector"
        )
    return y.expand(batch).reshape(-1).long()


class Generator(nn.Module):
    """``z (..., latent_dim)`` [and labels ``y (...)`` or a context ``c (..., F)``] -> ``body(cat(z, embed(y) or c))``.

    The output has shape ``(..., *out_shape)``.
    """

    def __init__(self, body: nn.Module, out_shape: tuple[int, ...], options: GeneratorOptions):
        super().__init__()
        self.body = body
        self.out_shape = tuple(out_shape)
        self.num_classes, self.context_features = options.num_classes, options.context_features
        self.label_embed = nn.Embedding(self.num_classes, options.embed_dim or self.num_classes) if self.num_classes else None

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        batch = z.shape[:-1]
        h = z.reshape(-1, z.shape[-1])
        if self.context_features:
            h = torch.cat([h, context_rows(y, batch, self.context_features, "generator", h.dtype)], dim=-1)
        else:
            labels = _labels(y, self.num_classes, "generator", batch)
            if labels is not None:
                h = torch.cat([h, self.label_embed(labels)], dim=-1)
        return self.body(h).reshape(*batch, *self.out_shape)


class Critic(nn.Module):
    """``critic(x[, z][, y])``: ``h = body(x, cat(z, embed(y)))``, scores ``w·h [+ embed(y)·h]`` [, class logits].

    ``body(x, extra)`` maps a flat batch of ``x`` (and ``extra`` or ``None``) to ``(N, features)``.
    """

    graph_methods = ("features",)

    def __init__(self, body: nn.Module, features: int, event_shape: tuple[int, ...], options: CriticOptions):
        super().__init__()
        sn = options.spectral_norm
        self.body = body
        self.event_shape = tuple(event_shape)
        self.joint = options.joint_dim is not None
        self.num_classes = options.num_classes
        self.conditioning = options.conditioning if options.num_classes else None
        if self.conditioning == "concat":
            self.label_embed = nn.Embedding(options.num_classes, options.embed_dim or options.num_classes)
        elif self.conditioning == "projection":
            self.label_embed = spectral(nn.Embedding(options.num_classes, features), sn)
        self.out = spectral(nn.Linear(features, options.out_features), sn)
        self.classifier = spectral(nn.Linear(features, options.ac_classes), sn) if options.ac_classes else None

    def signature(self) -> str:
        return "critic(" + ", ".join(["x"] + ["z"] * self.joint + ["y"] * (self.num_classes is not None)) + ")"

    def _hidden(self, args: tuple[Tensor, ...]) -> tuple[Tensor, torch.Size, Tensor | None]:
        expected = 1 + self.joint + (self.num_classes is not None)
        if len(args) != expected:
            raise TypeError(f"this critic is called as {self.signature()}; got {len(args)} inputs")
        x = args[0]
        batch = x.shape[: x.dim() - len(self.event_shape)]
        labels = _labels(args[-1] if self.num_classes else None, self.num_classes, "critic", batch)
        extras = [args[1].expand(*batch, -1).reshape(-1, args[1].shape[-1])] if self.joint else []
        if self.conditioning == "concat":
            extras.append(self.label_embed(labels))
        h = self.body(x.reshape(-1, *self.event_shape), torch.cat(extras, dim=-1) if extras else None)
        return h, batch, labels

    def features(self, *args: Tensor) -> Tensor:
        """The representation ``h`` under the output layer, shape ``(..., features)``."""
        h, batch, _ = self._hidden(args)
        return h.reshape(*batch, -1)

    def forward(self, *args: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        h, batch, labels = self._hidden(args)
        score = self.out(h)
        if self.conditioning == "projection":
            score = score + (self.label_embed(labels) * h).sum(dim=-1, keepdim=True)
        score = score.reshape(*batch, -1)
        if self.classifier is None:
            return score
        return score, self.classifier(h).reshape(*batch, -1)


def _vector_norm(kind: VectorNorm, features: int) -> nn.Module:
    return {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}[kind](features) if kind != "none" else nn.Identity()


def _mlp_layers(sizes: list[int], norm: VectorNorm, activation: Callable[[], nn.Module], sn: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for n_in, n_out in pairwise(sizes):
        layers += [spectral(nn.Linear(n_in, n_out), sn), _vector_norm(norm, n_out), activation()]
    return layers


class _ConcatBody(nn.Module):
    """MLP critic body: ``net(cat(flatten(x), extra))``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, extra: Tensor | None) -> Tensor:
        x = x.flatten(1)
        return self.net(x if extra is None else torch.cat([x, extra], dim=-1))


class MLPGeneratorParams(GeneratorOptions):
    hidden: list[int] = Field(default_factory=lambda: [256, 256], min_length=1, description="widths of the hidden layers")
    out_shape: list[int] | None = Field(None, description="event shape of the output (default: the dataset's x)")
    norm: VectorNorm = Field("none", description="normalisation after each hidden linear layer")


class MLPCriticParams(CriticOptions):
    hidden: list[int] = Field(default_factory=lambda: [256, 256], min_length=1, description="widths of the hidden layers")
    in_shape: list[int] | None = Field(None, description="event shape of x (default: the dataset's x)")
    norm: VectorNorm = Field("none", description="normalisation after each hidden linear layer")


def build_mlp_generator(params: MLPGeneratorParams, ctx: BuildContext) -> Generator:
    """MLP generator: z [‖ embed(y)] -> (Linear, norm, ReLU)* -> Linear -> activation (Goodfellow et al. 2014)."""
    out_shape = data_shape(ctx, params.out_shape, "out_shape", "mlp_generator")
    sizes = [generator_in_features(params), *params.hidden]
    body = nn.Sequential(
        *_mlp_layers(sizes, params.norm, nn.ReLU, params.spectral_norm),
        spectral(nn.Linear(sizes[-1], math.prod(out_shape)), params.spectral_norm),
        output_activation(params.output),
    )
    return Generator(body, out_shape, params)


def build_mlp_critic(params: MLPCriticParams, ctx: BuildContext) -> Critic:
    """MLP critic: [x ‖ z ‖ embed(y)] -> (Linear, norm, LeakyReLU)* -> score [+ projection] [, class logits]."""
    in_shape = data_shape(ctx, params.in_shape, "in_shape", "mlp_critic")
    sizes = [math.prod(in_shape) + critic_extra_features(params), *params.hidden]
    net = nn.Sequential(*_mlp_layers(sizes, params.norm, lambda: nn.LeakyReLU(0.2), params.spectral_norm))
    return Critic(_ConcatBody(net), sizes[-1], in_shape, params)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("mlp_generator", "generator", MLPGeneratorParams, build_mlp_generator),
        ComponentType("mlp_critic", "critic", MLPCriticParams, build_mlp_critic),
    ]

