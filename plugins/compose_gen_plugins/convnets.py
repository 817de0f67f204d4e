"""DCGAN-style convolutional generators, critics and encoders for small images (Radford et al. 2016).

An image of shape ``(C, H, W)`` is halved ``n`` times, while both sides stay even and at
least ``min_size``, down to ``(h0, w0)``; level ``i`` has ``base_channels · 2^i`` channels.
For 8×8 digits with ``min_size: 4``: one level, 8×8 -> 4×4; for 32×32: three.

* generator:  z [‖ embed(y)] -> Linear -> (C_n, h0, w0), norm, ReLU
  -> [ConvTranspose 4×4 stride 2, norm, ReLU] × n -> Conv 3×3 -> C channels -> tanh | sigmoid | none
* critic:     x -> Conv 3×3, LeakyReLU(0.2) -> [Conv 4×4 stride 2, norm, LeakyReLU(0.2)] × n -> flatten = h
  [-> Linear(h ‖ z ‖ embed(y)), LeakyReLU(0.2) for joint or concat-conditioned critics] -> head
  (score, projection, auxiliary classifier: see :class:`compose_gen_plugins.gan_nets.Critic`)
* encoder:    the critic's convolutional trunk -> Linear -> ``out_features`` (a ``network``: a VAE
  encoder's net, BiGAN's E); ``conv_decoder`` is the generator registered as a ``network``.
* translator: image -> image at constant resolution (CycleGAN's mappings): Conv 3×3, norm, ReLU
  -> residual blocks -> Conv 3×3 -> activation.

Options: spectral normalisation (Miyato et al. 2018), norm ``batch | instance | layer | none``
(layer = GroupNorm with one group: over C, H, W), class-conditional inputs and a joint critic.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from compose_gen import BuildContext, ComponentType, Params, Size, hookimpl
from compose_gen_plugins.networks import Output, caution_output_range, context_rows, output_activation
from compose_gen_plugins.gan_nets import (
    Critic,
    CriticOptions,
    Generator,
    GeneratorOptions,
    check_event_shape,
    critic_extra_features,
    data_shape,
    generator_in_features,
    spectral,
)

__all__ = ["ConvEncoder", "ImageToImage", "ResidualBlock", "levels"]

Norm = Literal["batch", "instance", "layer", "none"]


def levels(image_shape: tuple[int, ...], min_size: int) -> tuple[int, int, int]:
    """``(n, h0, w0)``: how often an image can be halved while staying even and ≥ ``min_size``."""
    _, h, w = image_shape
    n = 0
    while h % 2 == 0 and w % 2 == 0 and h // 2 >= min_size and w // 2 >= min_size:
        h, w, n = h // 2, w // 2, n + 1
    return n, h, w


def _refuse_instance_norm_at_one_pixel(norm: Norm, size: tuple[int, int], min_size: int, type_name: str) -> None:
    """Refuse ``norm: instance`` on a 1×1 feature map: it normalises each channel over its one position (torch refuses it)."""
    if norm == "instance" and size == (1, 1):
        raise ValueError(
            f"{type_name}: norm: instance normalises each channel over its spatial positions, but with min_size: {min_size} "
            f"its smallest feature map is 1x1, which has one: set min_size: 2 or more, or norm: layer, batch or none"
        )


def norm2d(kind: Norm, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


class ImageOptions(Params):
    image_shape: list[Size] | None = Field(
        None, min_length=3, max_length=3, description="(C, H, W) (default: the dataset's image shape)"
    )
    base_channels: int = Field(64, ge=1, description="channels at full resolution; doubled at each halving")
    spectral_norm: bool = Field(False, description="spectral normalisation of every weight layer (Miyato et al. 2018)")


class ConvOptions(ImageOptions):
    min_size: int = Field(4, ge=1, description="smallest spatial size")


def _image_shape(ctx: BuildContext, params: ImageOptions, type_name: str, reads_x: bool = False) -> tuple[int, int, int]:
    """``image_shape``, else the dataset's image shape (two-domain sets have no ``x``), else x's event shape.

    A network that ``reads_x`` (an encoder, critic or translator) refuses data whose examples are flat.
    """
    data = getattr(ctx, "data", None)
    if params.image_shape is None and data is not None and data.train.image_shape is not None:
        shape = tuple(data.train.image_shape)
    else:
        shape = data_shape(ctx, params.image_shape, "image_shape", type_name)
    if reads_x and data is not None and "x" in data.train.fields:
        _refuse_flat_examples(tuple(data.train.event_shape("x")), shape, type_name)
    if len(shape) != 3:
        raise ValueError(f"{type_name}: needs images of shape (C, H, W); the data has event shape {shape}")
    return shape  # type: ignore[return-value]


def _refuse_flat_examples(event: tuple[int, ...], shape: tuple[int, ...], type_name: str) -> None:
    """Refuse data whose examples (of shape ``event``) are flat vectors, saying how to have the dataset give images."""
    if len(event) != 1:
        return
    fits = len(shape) == 3 and math.prod(shape) == event[0]
    raise ValueError(
        f"{type_name}: needs images of shape (C, H, W); the data's examples are flat, of shape {event}"
        f"{f' (images {shape} flattened)' if fits else ''}. Have the dataset give images: `shape: image` for digits, "
        f"mnist_idx or image_folder (and no `flatten` transform), a transform "
        f"`{{type: reshape, shape: {list(shape) if fits else '[C, H, W]'}}}` for npz or npy"
    )


def conv_trunk(shape: tuple[int, int, int], params: ConvOptions, norm: Norm, type_name: str = "conv_critic") -> tuple[nn.Sequential, int]:
    """The critic/encoder convolutions and the size of their flattened output."""
    n, h, w = levels(shape, params.min_size)
    if n:  # the strided convolutions' norm layers, the last at (h, w)
        _refuse_instance_norm_at_one_pixel(norm, (h, w), params.min_size, type_name)
    width = [params.base_channels * 2**i for i in range(n + 1)]
    sn = params.spectral_norm
    layers: list[nn.Module] = [spectral(nn.Conv2d(shape[0], width[0], 3, padding=1), sn), nn.LeakyReLU(0.2)]
    for i in range(1, n + 1):
        layers += [spectral(nn.Conv2d(width[i - 1], width[i], 4, 2, 1), sn), norm2d(norm, width[i]), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers, nn.Flatten()), width[n] * h * w


class _ConvCriticBody(nn.Module):
    """``h = trunk(x)``, then ``mix(cat(h, extra))`` when the critic takes z or a label embedding."""

    def __init__(self, trunk: nn.Module, mix: nn.Module | None) -> None:
        super().__init__()
        self.trunk = trunk
        self.mix = mix

    def forward(self, x: Tensor, extra: Tensor | None) -> Tensor:
        h = self.trunk(x)
        return h if self.mix is None else self.mix(torch.cat([h, extra], dim=-1))


class ConvEncoder(nn.Module):
    """``x (..., C, H, W) [, c (..., F)] -> (..., out_features)``: convolutional trunk ``h``, then ``Linear(h [‖ c])``."""

    def __init__(
        self,
        trunk: nn.Module,
        features: int,
        out_features: int,
        image_shape: tuple[int, ...],
        sn: bool,
        context_features: int = 0,
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.trunk = trunk
        self.context_features = context_features
        self.out = spectral(nn.Linear(features + context_features, out_features), sn)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        check_event_shape(x, self.image_shape, "conv_encoder", "image_shape")
        batch = x.shape[:-3]
        h = self.trunk(x.reshape(-1, *self.image_shape))
        if self.context_features or context is not None:
            h = torch.cat([h, context_rows(context, batch, self.context_features, "conv_encoder", h.dtype)], dim=-1)
        return self.out(h).reshape(*batch, -1)


class ResidualBlock(nn.Module):
    """``x + norm(Conv3×3(ReLU(norm(Conv3×3(x)))))`` (He et al. 2016), at constant resolution."""

    def __init__(self, channels: int, norm: Norm, sn: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            spectral(nn.Conv2d(channels, channels, 3, padding=1), sn),
            norm2d(norm, channels),
            nn.ReLU(),
            spectral(nn.Conv2d(channels, channels, 3, padding=1), sn),
            norm2d(norm, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ImageToImage(nn.Module):
    """``x (..., C, H, W) -> net(x) (..., C', H, W)``: an image-to-image network over any leading dims."""

    def __init__(self, net: nn.Module, image_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        check_event_shape(x, self.image_shape, "conv_translator", "image_shape")
        y = self.net(x.reshape(-1, *self.image_shape))
        return y.reshape(*x.shape[:-3], *y.shape[1:])


class ConvTranslatorParams(ImageOptions):
    out_channels: int | None = Field(None, ge=1, description="channels of the output (default: the input's)")
    blocks: int = Field(3, ge=0, le=1000, description="residual blocks (at most 1000)")
    norm: Norm = Field("instance", description="normalisation after every convolution but the last")
    output: Output = Field("none", description="output activation: tanh for data in [-1, 1], sigmoid for [0, 1]")


class ConvGeneratorParams(GeneratorOptions, ConvOptions):
    norm: Norm = Field("batch", description="normalisation after the linear layer and each transposed convolution")


class ConvCriticParams(CriticOptions, ConvOptions):
    norm: Norm = Field("none", description="normalisation after each strided convolution")
    hidden: int | None = Field(
        None, ge=1, description="width of the layer mixing h with z or a label embedding (default 512)"
    )

    @model_validator(mode="after")
    def _hidden_needs_extras(self) -> "ConvCriticParams":
        if self.hidden is not None and critic_extra_features(self) == 0:
            raise ValueError("hidden applies only to joint (joint_dim) or concat-conditioned critics")
        return self


class ConvEncoderParams(ConvOptions):
    out_features: int = Field(ge=1, description="size of the output vector")
    norm: Norm = Field("none", description="normalisation after each strided convolution")
    context_features: int = Field(
        0, ge=0, description="size of a context vector read beside the image features: net(x, context)"
    )


def build_conv_generator(params: ConvGeneratorParams, ctx: BuildContext) -> Generator:
    """DCGAN generator: z [‖ embed(y)] -> Linear -> transposed convs, norm, ReLU -> image (Radford et al. 2016).

    G(z [, y]) = a(conv3x3(U_1 ∘ … ∘ U_n(ReLU(norm(W [z ‖ embed(y)] + b))))),  U_i = ReLU ∘ norm ∘ convT4x4 (stride 2),
    the linear layer's output read as (base_channels · 2^n, h0, w0), a the output activation (tanh, sigmoid or none).

    Radford et al. 2016, "Unsupervised Representation Learning with Deep Convolutional Generative Adversarial Networks".
    """
    shape = _image_shape(ctx, params, "conv_generator")
    n, h, w = levels(shape, params.min_size)
    _refuse_instance_norm_at_one_pixel(params.norm, (h, w), params.min_size, "conv_generator")
    width = [params.base_channels * 2**i for i in range(n + 1)]
    sn = params.spectral_norm
    layers: list[nn.Module] = [
        spectral(nn.Linear(generator_in_features(params), width[n] * h * w), sn),
        nn.Unflatten(1, (width[n], h, w)),
        norm2d(params.norm, width[n]),
        nn.ReLU(),
    ]
    for i in range(n, 0, -1):
        layers += [spectral(nn.ConvTranspose2d(width[i], width[i - 1], 4, 2, 1), sn), norm2d(params.norm, width[i - 1])]
        layers.append(nn.ReLU())
    layers += [spectral(nn.Conv2d(width[0], shape[0], 3, padding=1), sn), output_activation(params.output)]
    caution_output_range(params.output, shape, ctx)
    return Generator(nn.Sequential(*layers), shape, params)


def build_conv_critic(params: ConvCriticParams, ctx: BuildContext) -> Critic:
    """DCGAN critic: strided convs with LeakyReLU -> features φ(x) -> score [+ projection] [, class logits]; D(x, z) for BiGAN.

    D(x) = wᵀφ(x) + b; conditioned on a class y by projection, D(x, y) = wᵀφ(x) + b + embed(y)ᵀφ(x); with class
    logits, an auxiliary classifier's log p(y|x) beside the score; joint D(x, z) for BiGAN/ALI, z (and a concatenated
    label) joined to φ(x) by a hidden layer.

    Radford et al. 2016, "Unsupervised Representation Learning with Deep Convolutional Generative Adversarial
    Networks"; Miyato & Koyama 2018, "cGANs with Projection Discriminator"; Odena et al. 2017, "Conditional Image
    Synthesis with Auxiliary Classifier GANs"; Donahue et al. 2017, "Adversarial Feature Learning".
    """
    shape = _image_shape(ctx, params, "conv_critic", reads_x=True)
    trunk, features = conv_trunk(shape, params, params.norm)
    extra = critic_extra_features(params)
    mix = None
    if extra:
        hidden = params.hidden or 512
        mix = nn.Sequential(spectral(nn.Linear(features + extra, hidden), params.spectral_norm), nn.LeakyReLU(0.2))
        features = hidden
    return Critic(_ConvCriticBody(trunk, mix), features, shape, params, "image_shape")


def build_conv_encoder(params: ConvEncoderParams, ctx: BuildContext) -> ConvEncoder:
    """Convolutional encoder network: strided convs with LeakyReLU -> Linear -> out_features (Radford et al. 2016).

    f(x [, c]) = W [h(x) ‖ c] + b,  h = flatten ∘ L_n ∘ … ∘ L_1 ∘ σ ∘ conv3x3,  L_i = σ ∘ norm ∘ conv4x4 (stride 2),
    σ = LeakyReLU(0.2), level i with ``base_channels`` · 2^i channels, n the halvings of the image that stay even and
    ≥ ``min_size``; c a context vector when ``context_features`` > 0.

    Radford et al. 2016, "Unsupervised Representation Learning with Deep Convolutional Generative Adversarial Networks".
    """
    shape = _image_shape(ctx, params, "conv_encoder", reads_x=True)
    trunk, features = conv_trunk(shape, params, params.norm, "conv_encoder")
    return ConvEncoder(trunk, features, params.out_features, shape, params.spectral_norm, params.context_features)


def build_conv_translator(params: ConvTranslatorParams, ctx: BuildContext) -> ImageToImage:
    """Residual image-to-image generator like CycleGAN's (Zhu et al. 2017), without resampling.

    G(x) = out(h_B), h_0 = ReLU(norm(conv(x))), h_{i+1} = h_i + F_i(h_i) with F_i two 3x3 convolutions (a residual
    block: conv, norm, ReLU, conv, norm), out a 3x3 convolution to ``out_channels`` (x's by default), then the output
    activation.

    Zhu et al. 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks"; He et al. 2016,
    "Deep Residual Learning for Image Recognition".
    """
    shape = _image_shape(ctx, params, "conv_translator", reads_x=True)
    width, sn = params.base_channels, params.spectral_norm
    net = nn.Sequential(
        spectral(nn.Conv2d(shape[0], width, 3, padding=1), sn),
        norm2d(params.norm, width),
        nn.ReLU(),
        *[ResidualBlock(width, params.norm, sn) for _ in range(params.blocks)],
        spectral(nn.Conv2d(width, params.out_channels or shape[0], 3, padding=1), sn),
        output_activation(params.output),
    )
    caution_output_range(params.output, (params.out_channels or shape[0], *shape[1:]), ctx)
    return ImageToImage(net, shape)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    decoder_doc = "DCGAN generator as a network z -> image, e.g. a VAE decoder's net (Radford et al. 2016)."
    decoder_help = (
        f"{decoder_doc}\n\nz -> Linear -> transposed convs, norm, ReLU -> an image of image_shape (C, H, W): "
        "f(z) = a(conv3x3(U_1 ∘ … ∘ U_n(ReLU(norm(W z + b))))), U_i = ReLU ∘ norm ∘ convT4x4 (stride 2). As a decoder's "
        "net it gives the decoder's parameters per pixel, so C is the channels times what the decoder needs of each: "
        "2·C for a gaussian_decoder with scale: predicted (loc and scale), 3·K·C for a K-component "
        "discretized_logistic_decoder; num_classes and embed_dim condition it on a label, as a conditional VAE's decoder."
    )
    return [
        ComponentType("conv_generator", "generator", ConvGeneratorParams, build_conv_generator),
        ComponentType("conv_decoder", "network", ConvGeneratorParams, build_conv_generator, doc=decoder_doc, help=decoder_help),
        ComponentType("conv_critic", "critic", ConvCriticParams, build_conv_critic),
        ComponentType("conv_encoder", "network", ConvEncoderParams, build_conv_encoder),
        ComponentType("conv_translator", "generator", ConvTranslatorParams, build_conv_translator),
    ]
