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
Inputs are checked, not reshaped into shape: a critic refuses ``x`` whose examples are not
its ``image_shape``/``in_shape`` (rather than reading a batch as more or fewer examples), a
joint critic ``z`` not of ``joint_dim``, a generator ``z`` not of ``latent_dim``, and both
refuse labels that are not integers in ``0..num_classes-1`` (see :class:`_Labelled` for
what that costs per step).
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Callable, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from compose_gen import BuildContext, ComponentType, Params, Size, hookimpl
from compose_gen_plugins.networks import Output, caution_output_range, context_rows, output_activation

__all__ = [
    "Critic",
    "CriticOptions",
    "Generator",
    "GeneratorOptions",
    "check_event_shape",
    "critic_extra_features",
    "data_shape",
    "generator_in_features",
    "spectral",
]

VectorNorm = Literal["batch", "layer", "none"]


def spectral(layer: nn.Module, enabled: bool) -> nn.Module:
    """``layer`` with its weight spectrally normalised (Miyato et al. 2018) when ``enabled``.

    One power iteration per training forward, as in the paper: σ is a running estimate, so a layer whose top
    singular values lie close together (a stride-2 convolution, say) can have a normalised σ_max of 1.05-1.15, not 1.
    As in the paper, σ is that of the weight matrix (a convolution's kernel reshaped to (out, in·k·k)), not of the
    layer's map, which for a convolution can stretch its input a few times more (1.8-2.9 measured on the 8x8
    digits critics): the critic is Lipschitz-bounded, not 1-Lipschitz.
    """
    return _spectral_norm(layer) if enabled else layer


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


def _shape(shape: tuple[int, ...] | torch.Size) -> str:
    return str(tuple(shape))


def check_event_shape(x: Tensor, shape: tuple[int, ...], who: str, field: str) -> None:
    """Refuse ``x`` unless it ends in ``shape``, the per-example shape ``who`` was built for (its ``field``).

    Networks reshape their input to ``(-1, *shape)``; without this check an input whose
    examples have the same number of elements in another shape would pass unnoticed, and
    one whose examples are k times larger would become k times as many examples.
    """
    n = len(shape)
    if x.dim() >= n and tuple(x.shape[x.dim() - n :]) == tuple(shape):
        return
    example = tuple(x.shape[1:]) if x.dim() > 1 else tuple(x.shape)
    size, expected = math.prod(example), math.prod(shape)
    effect = ""
    if x.dim() > n and size != expected and size % expected == 0:
        effect = f"; reshaped to {field} it would become {size // expected} examples each"
    if field == "image_shape" and len(example) != 3:  # no image_shape fits: the data must come as images
        fix = "load the data as (N, C, H, W) images (digits: shape: image; an array dataset: x of that shape)"
    else:
        fix = f"set {field}: {list(example)} if that is what it should read"
    raise ValueError(
        f"{who} reads examples of shape {_shape(shape)} (its {field}), but got x of shape {_shape(x.shape)}, "
        f"whose examples are {_shape(example)}{effect}. Give it inputs shaped like the data it was built for "
        f"(a generator's output must have the data's shape: its image_shape or out_shape, or leave them unset to "
        f"take the data's), or {fix}"
    )


#: Calls per module (a Python count, no tensor) whose labels on an accelerator have their range checked.
DEVICE_LABEL_CHECKS = 16


class _Labelled(nn.Module):
    """The label input of a generator or critic: every check of labels for the embedding is here.

    The range check (labels in ``0..num_classes-1``; ``nn.Embedding`` otherwise fails with
    a bare ``IndexError``, or a device-side assert on CUDA that poisons the context) costs
    a min/max reduction over the batch.  On the CPU it runs on every call: reading it back
    is no host sync, and it is small next to the embedding.  On an accelerator reading it
    back would be a host sync per call, i.e. several per training step where the trainer
    allows itself one, so it runs on the first ``DEVICE_LABEL_CHECKS`` calls of each module
    only.  Those include the dry run every compiled model gets before training (on the
    model's device), which calls each module at each of its call sites on a batch holding
    the data's largest label, so the data's labels are checked wherever they run; later
    calls pay nothing.  Under ``torch.compile`` the check is skipped (it would break the
    graph); the eager dry run has already made it.
    """

    who = "module"

    def __init__(self, num_classes: int | None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self._device_label_checks = DEVICE_LABEL_CHECKS

    def _vector_advice(self, y: Tensor, batch: torch.Size) -> str:
        """What to do with a condition ``y`` that is no integer labels over ``batch``."""
        raise NotImplementedError

    def _unexpected_labels_advice(self) -> str:
        return "give it num_classes, or pass no labels"

    def _labels(self, y: Tensor | None, batch: torch.Size) -> Tensor | None:
        """Labels as a flat long tensor over ``batch`` (broadcast, so ``y (B,)`` serves ``z (S, B, d)``)."""
        num_classes, who = self.num_classes, self.who
        if num_classes is None:
            if y is not None:
                raise TypeError(
                    f"{who} is not conditional (num_classes is unset) but got labels of shape {_shape(y.shape)}: "
                    + self._unexpected_labels_advice()
                )
            return None
        if y is None:
            raise TypeError(f"{who} is conditional (num_classes={num_classes}): pass the labels y")
        if y.dim() > len(batch) or y.is_floating_point() or y.is_complex():
            raise TypeError(
                f"{who} takes integer labels y (num_classes={num_classes}), got a {y.dtype} tensor of shape "
                f"{_shape(y.shape)}: {self._vector_advice(y, batch)}"
            )
        try:
            labels = y.expand(batch).reshape(-1).long()
        except RuntimeError:
            raise ValueError(
                f"{who}: labels of shape {_shape(y.shape)} do not match its input's batch {_shape(batch)}: "
                "pass one label per example"
            ) from None
        if self._range_check_due(labels):
            _check_label_range(labels, num_classes, who)
        return labels

    def _range_check_due(self, labels: Tensor) -> bool:
        if torch.compiler.is_compiling() or labels.numel() == 0:
            return False
        if labels.device.type == "cpu":
            return True
        if self._device_label_checks > 0:
            self._device_label_checks -= 1
            return True
        return False


def _check_label_range(labels: Tensor, num_classes: int, who: str) -> None:
    """An ``IndexError`` (what the embedding would raise, explained) for labels outside ``0..num_classes-1``."""
    low, high = (int(v) for v in torch.aminmax(labels))
    valid = f"num_classes={num_classes} (labels 0..{num_classes - 1})"
    if high >= num_classes:
        raise IndexError(
            f"index out of range: labels go up to {high}, but this {who} has {valid}: set num_classes to at least "
            f"{high + 1} (the number of classes in its labels), or pass labels below {num_classes}"
        )
    if low < 0:
        raise IndexError(f"index out of range: labels go down to {low}, but this {who} has {valid}: labels are class indices from 0")


class Generator(_Labelled):
    """``z (..., latent_dim)`` [and labels ``y (...)`` or a context ``c (..., F)``] -> ``body(cat(z, embed(y) or c))``.

    The output has shape ``(..., *out_shape)``.
    """

    who = "generator"

    def __init__(self, body: nn.Module, out_shape: tuple[int, ...], options: GeneratorOptions) -> None:
        super().__init__(options.num_classes)
        self.body = body
        self.out_shape = tuple(out_shape)
        self.latent_dim = options.latent_dim
        self.context_features = options.context_features
        self.label_embed = nn.Embedding(self.num_classes, options.embed_dim or self.num_classes) if self.num_classes else None

    def _vector_advice(self, y: Tensor, batch: torch.Size) -> str:
        if y.dim() != len(batch) + 1:  # an image, say: no vector per example that context_features could read
            return "pass y itself, one integer label per example"
        return f"pass y itself, or give it context_features: {y.shape[-1]} in place of num_classes to read a vector"

    def _unexpected_labels_advice(self) -> str:
        return "call it as G(z), or give it num_classes to read integer labels (or context_features to read a vector)"

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if z.dim() == 0 or z.shape[-1] != self.latent_dim:
            raise ValueError(
                f"generator: z has shape {_shape(z.shape)}, but its latent_dim is {self.latent_dim}: "
                f"set latent_dim to the size of z{f' ({z.shape[-1]})' if z.dim() else ''}, "
                f"or draw z of size {self.latent_dim} (the noise's shape)"
            )
        batch = z.shape[:-1]
        h = z.reshape(-1, z.shape[-1])
        if self.context_features:
            h = torch.cat([h, context_rows(y, batch, self.context_features, "generator", h.dtype)], dim=-1)
        else:
            labels = self._labels(y, batch)
            if labels is not None:
                h = torch.cat([h, self.label_embed(labels)], dim=-1)
        return self.body(h).reshape(*batch, *self.out_shape)


class Critic(_Labelled):
    """``critic(x[, z][, y])``: ``h = body(x, cat(z, embed(y)))``, scores ``w·h [+ embed(y)·h]`` [, class logits].

    ``body(x, extra)`` maps a flat batch of ``x`` (and ``extra`` or ``None``) to ``(N, features)``.
    ``x`` must end in ``event_shape`` (the critic's ``shape_field``, e.g. ``image_shape``) and a
    joint critic's ``z`` in ``joint_dim``: an input of another shape is refused, not reshaped.
    """

    graph_methods = ("features",)
    who = "critic"

    def __init__(
        self,
        body: nn.Module,
        features: int,
        event_shape: tuple[int, ...],
        options: CriticOptions,
        shape_field: str = "in_shape",
    ) -> None:
        super().__init__(options.num_classes)
        sn = options.spectral_norm
        self.body = body
        self.event_shape = tuple(event_shape)
        self.shape_field = shape_field
        self.joint = options.joint_dim is not None
        self.joint_dim = options.joint_dim
        self.conditioning = options.conditioning if options.num_classes else None
        if self.conditioning == "concat":
            self.label_embed = nn.Embedding(options.num_classes, options.embed_dim or options.num_classes)
        elif self.conditioning == "projection":  # Glorot-initialised, as Miyato & Koyama's: N(0, 1) rows let <embed(y), φ(x)>
            embed = nn.Embedding(options.num_classes, features)  # swamp the score (a WGAN-GP's penalty started at ~6000)
            nn.init.xavier_uniform_(embed.weight)
            self.label_embed = spectral(embed, sn)
        self.out = spectral(nn.Linear(features, options.out_features), sn)
        self.classifier = spectral(nn.Linear(features, options.ac_classes), sn) if options.ac_classes else None

    def signature(self) -> str:
        return "critic(" + ", ".join(["x"] + ["z"] * self.joint + ["y"] * (self.num_classes is not None)) + ")"

    def _vector_advice(self, y: Tensor, batch: torch.Size) -> str:
        return (
            "pass the class labels y themselves (labels: y on its loss); "
            "a critic reads class indices through num_classes and takes no vector condition"
        )

    def _count_advice(self, given: int) -> str:
        if given > 1 + self.joint + (self.num_classes is not None):
            options = []
            if self.num_classes is None:
                options.append("num_classes to take labels y")
            if not self.joint:
                options.append("joint_dim to take a latent z (BiGAN)")
            if options:
                return f": give it {' or '.join(options)}, or pass fewer inputs (a loss's labels are passed last)"
            return ""
        missing = []
        if self.joint:
            missing.append("z (on a loss, real: [x, z_hat] and fake: [fake, z])")
        if self.num_classes is not None:
            missing.append("the labels y (on a loss, labels: y)")
        return f": pass {' and '.join(missing)}"

    def _hidden(self, args: tuple[Tensor, ...]) -> tuple[Tensor, torch.Size, Tensor | None]:
        expected = 1 + self.joint + (self.num_classes is not None)
        if len(args) != expected:
            shapes = ", ".join(_shape(a.shape) if isinstance(a, Tensor) else type(a).__name__ for a in args)
            raise TypeError(
                f"this critic is called as {self.signature()}; got {len(args)} inputs ({shapes}){self._count_advice(len(args))}"
            )
        x = args[0]
        check_event_shape(x, self.event_shape, "critic", self.shape_field)
        batch = x.shape[: x.dim() - len(self.event_shape)]
        labels = self._labels(args[-1] if self.num_classes else None, batch)
        extras = [self._joint_rows(args[1], batch)] if self.joint else []
        if self.conditioning == "concat":
            extras.append(self.label_embed(labels))
        h = self.body(x.reshape(-1, *self.event_shape), torch.cat(extras, dim=-1) if extras else None)
        return h, batch, labels

    def _joint_rows(self, z: Tensor, batch: torch.Size) -> Tensor:
        """A joint critic's ``z`` as ``(N, joint_dim)`` rows, one per example of ``x``."""
        if z.dim() == 0 or z.shape[-1] != self.joint_dim:
            raise ValueError(
                f"critic(x, z): z has shape {_shape(z.shape)}, but this critic has joint_dim={self.joint_dim}: "
                f"set joint_dim to the size of z{f' ({z.shape[-1]})' if z.dim() else ''}; in a BiGAN the latent z "
                f"and the encoder's output E(x) both have that size (the noise's shape, the encoder's out_features)"
            )
        try:
            return z.expand(*batch, -1).reshape(-1, z.shape[-1])
        except RuntimeError:
            raise ValueError(
                f"critic(x, z): z of shape {_shape(z.shape)} does not match the batch {_shape(batch)} of x: "
                "pass one z per example"
            ) from None

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

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, extra: Tensor | None) -> Tensor:
        x = x.flatten(1)
        return self.net(x if extra is None else torch.cat([x, extra], dim=-1))


class MLPGeneratorParams(GeneratorOptions):
    hidden: list[Size] = Field(default_factory=lambda: [256, 256], min_length=1, description="widths of the hidden layers")
    out_shape: list[Size] | None = Field(None, description="event shape of the output (default: the dataset's x)")
    norm: VectorNorm = Field("none", description="normalisation after each hidden linear layer")


class MLPCriticParams(CriticOptions):
    hidden: list[Size] = Field(default_factory=lambda: [256, 256], min_length=1, description="widths of the hidden layers")
    in_shape: list[Size] | None = Field(None, description="event shape of x (default: the dataset's x)")
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
    caution_output_range(params.output, out_shape, ctx)
    return Generator(body, out_shape, params)


def build_mlp_critic(params: MLPCriticParams, ctx: BuildContext) -> Critic:
    """MLP critic: [x ‖ z ‖ embed(y)] -> (Linear, norm, LeakyReLU)* -> features φ -> score [+ projection] [, class logits].

    D(x) = wᵀφ(x) + b; by projection D(x, y) = wᵀφ(x) + b + embed(y)ᵀφ(x); with class logits, an auxiliary
    classifier's log p(y|x) beside the score; given z too, the joint D(x, z) of BiGAN/ALI.

    Goodfellow et al. 2014, "Generative Adversarial Nets"; Miyato & Koyama 2018, "cGANs with Projection
    Discriminator"; Odena et al. 2017, "Conditional Image Synthesis with Auxiliary Classifier GANs"; Donahue et al.
    2017, "Adversarial Feature Learning".
    """
    in_shape = data_shape(ctx, params.in_shape, "in_shape", "mlp_critic")
    sizes = [math.prod(in_shape) + critic_extra_features(params), *params.hidden]
    net = nn.Sequential(*_mlp_layers(sizes, params.norm, lambda: nn.LeakyReLU(0.2), params.spectral_norm))
    return Critic(_ConcatBody(net), sizes[-1], in_shape, params, "in_shape")


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("mlp_generator", "generator", MLPGeneratorParams, build_mlp_generator),
        ComponentType("mlp_critic", "critic", MLPCriticParams, build_mlp_critic),
    ]

