"""Convolutional and MLP GAN networks: shapes, call forms, spectral norm, conditioning (labels or a context vector), heads."""

from __future__ import annotations

import pydantic
import pytest
import torch
from torch import nn

from compose_gen import Splits, TensorData, make_catalogue
from compose_gen_plugins import convnets, gan_nets

CATALOGUE = make_catalogue([convnets, gan_nets], entry_points=False)
SMALL = {"base_channels": 4}


class Context:
    def __init__(self, data: Splits | None = None) -> None:
        self.data = data

    def component(self, ref: str) -> nn.Module:
        raise KeyError(ref)


def build(type_name: str, ctx: Context | None = None, **params: object) -> nn.Module:
    component_type = CATALOGUE.get(type_name)
    return component_type.build(component_type.params(**params), ctx or Context())


def digits_like(n: int = 6) -> Splits:
    part = TensorData({"x": torch.rand(n, 1, 8, 8), "y": torch.arange(n) % 3}, image_shape=(1, 8, 8), num_classes=3)
    return Splits(part, part)


def test_kinds() -> None:
    kinds = {t.name: t.kind for t in CATALOGUE.types.values()}
    assert kinds == {
        "conv_generator": "generator",
        "conv_decoder": "network",
        "conv_critic": "critic",
        "conv_encoder": "network",
        "conv_translator": "generator",
        "mlp_generator": "generator",
        "mlp_critic": "critic",
    }


@pytest.mark.parametrize(("size", "halvings"), [(8, 1), (32, 3), (28, 2), (6, 0)])
def test_levels(size: int, halvings: int) -> None:
    n, h, w = convnets.levels((1, size, size), min_size=4)
    assert (n, h * 2**n, w * 2**n) == (halvings, size, size)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (2, 8, 16)])
@pytest.mark.parametrize("norm", ["batch", "instance", "layer", "none"])
def test_conv_shapes(shape: tuple[int, int, int], norm: str) -> None:
    generator = build("conv_generator", latent_dim=5, image_shape=list(shape), norm=norm, output="sigmoid", **SMALL)
    critic = build("conv_critic", image_shape=list(shape), norm=norm, **SMALL)
    encoder = build("conv_encoder", image_shape=list(shape), norm=norm, out_features=7, **SMALL)
    images = generator(torch.randn(4, 5))
    assert images.shape == (4, *shape)
    assert images.min() >= 0 and images.max() <= 1
    assert critic(images).shape == (4, 1)
    assert encoder(images).shape == (4, 7)


def test_shapes_come_from_the_data_by_default() -> None:
    ctx = Context(digits_like())
    generator = build("conv_generator", ctx, latent_dim=3, **SMALL)
    assert build("conv_critic", ctx, **SMALL)(generator(torch.randn(2, 3))).shape == (2, 1)
    with pytest.raises(ValueError, match="image_shape"):
        build("conv_generator", Context(), latent_dim=3)


def test_networks_broadcast_over_leading_dims() -> None:
    generator = build("conv_generator", latent_dim=3, image_shape=[1, 8, 8], **SMALL).eval()
    critic = build("conv_critic", image_shape=[1, 8, 8], num_classes=3, **SMALL).eval()
    z = torch.randn(2, 5, 3)
    y = torch.randint(0, 3, (2, 5))
    images = generator(z)
    assert images.shape == (2, 5, 1, 8, 8)
    torch.testing.assert_close(images[1], generator(z[1]))
    scores = critic(images, y)
    assert scores.shape == (2, 5, 1)
    torch.testing.assert_close(scores[0], critic(images[0], y[0]))
    # labels (and a joint critic's z) of the batch broadcast over extra sample dims
    shared = y[0]
    torch.testing.assert_close(critic(images, shared)[1], critic(images[1], shared))
    conditional = build("conv_generator", latent_dim=3, image_shape=[1, 8, 8], num_classes=3, **SMALL).eval()
    torch.testing.assert_close(conditional(z, shared)[0], conditional(z[0], shared))
    joint = build("mlp_critic", in_shape=[1, 8, 8], joint_dim=3, hidden=[8]).eval()
    torch.testing.assert_close(joint(images, z[0])[1], joint(images[1], z[0]))


def test_float64() -> None:
    generator = build("conv_generator", latent_dim=3, image_shape=[1, 8, 8], **SMALL).double()
    critic = build("conv_critic", image_shape=[1, 8, 8], spectral_norm=True, **SMALL).double()
    assert critic(generator(torch.randn(2, 3, dtype=torch.float64))).dtype == torch.float64


def weight_matrices(module: nn.Module) -> list[torch.Tensor]:
    """Every spectrally normalised weight as the matrix its norm is taken of (outputs × rest)."""
    matrices = []
    for layer in module.modules():
        if hasattr(layer, "parametrizations") and "weight" in layer.parametrizations:
            weight = layer.weight
            if isinstance(layer, nn.ConvTranspose2d):
                weight = weight.transpose(0, 1)
            matrices.append(weight.reshape(weight.shape[0], -1))
    return matrices


@pytest.mark.parametrize(
    ("type_name", "params"),
    [
        ("conv_critic", {"image_shape": [1, 8, 8], "num_classes": 3, "ac_classes": 3}),
        ("conv_generator", {"image_shape": [1, 8, 8], "latent_dim": 4}),
        ("mlp_critic", {"in_shape": [2], "hidden": [16, 16], "joint_dim": 2}),
    ],
)
def test_spectral_norm_makes_each_weight_norm_one(type_name: str, params: dict) -> None:
    net = build(type_name, spectral_norm=True, **params)
    weight_layers = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)
    expected_layers = sum(isinstance(m, weight_layers) for m in net.modules())
    assert len(weight_matrices(net)) == expected_layers
    # Start each power iteration at the top singular vectors of the unnormalised weight: the
    # normalised weight then has spectral norm exactly 1 (only iteration counts make it approximate).
    for layer in net.modules():
        if hasattr(layer, "parametrizations"):
            norm = layer.parametrizations.weight[0]
            matrix = norm._reshape_weight_to_matrix(layer.parametrizations.weight.original.detach())
            u, _, vh = torch.linalg.svd(matrix)
            norm._u.copy_(u[:, 0])
            norm._v.copy_(vh[0])
    net.eval()  # use u and v as they are
    for matrix in weight_matrices(net):
        assert torch.linalg.matrix_norm(matrix.detach(), ord=2).item() == pytest.approx(1.0, abs=1e-4)
    assert weight_matrices(build(type_name, **params)) == [], "no spectral norm unless asked"


def test_conditional_generator_signature() -> None:
    generator = build("conv_generator", latent_dim=3, image_shape=[1, 8, 8], num_classes=3, embed_dim=2, **SMALL).eval()
    z = torch.randn(1, 3).expand(3, 3)
    images = generator(z, torch.tensor([0, 1, 2]))
    assert not torch.allclose(images[0], images[1]), "the label changes the image"
    with pytest.raises(TypeError, match="labels"):
        generator(z)
    with pytest.raises(TypeError, match="not conditional"):
        build("conv_generator", latent_dim=3, image_shape=[1, 8, 8], **SMALL)(z, torch.tensor([0, 1, 2]))


def test_projection_critic_adds_the_label_embedding_dot_features() -> None:
    critic = build("conv_critic", image_shape=[1, 8, 8], num_classes=3, **SMALL)
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 1])
    h = critic.features(x, y)
    expected = critic.out(h) + (critic.label_embed(y) * h).sum(-1, keepdim=True)
    torch.testing.assert_close(critic(x, y), expected)
    with pytest.raises(TypeError, match=r"critic\(x, y\)"):
        critic(x)


@pytest.mark.parametrize("type_name, params", [("mlp_critic", {"in_shape": [64], "hidden": [512]}), ("conv_critic", {"image_shape": [1, 8, 8]})])
def test_a_projection_critic_starts_about_as_steep_as_an_unconditional_one(type_name: str, params: dict) -> None:
    """Without spectral norm the embedding's init sets the projection's scale: at N(0, 1) (torch's default) the label
    term swamped the score, ‖∂D/∂x‖ 40x the unconditional critic's, and a conditional WGAN-GP's penalty started at ~6000;
    Glorot's init (Miyato & Koyama's) keeps it on the output layer's scale."""

    def input_gradient(critic: nn.Module, *labels: torch.Tensor) -> float:
        x = torch.rand(64, *critic.event_shape, generator=torch.Generator().manual_seed(1)).requires_grad_()
        (gradient,) = torch.autograd.grad(critic(x, *labels).sum(), x)
        return float(gradient.flatten(1).norm(dim=1).mean())

    torch.manual_seed(0)
    conditional = input_gradient(build(type_name, num_classes=10, **params), torch.arange(64) % 10)
    torch.manual_seed(0)
    unconditional = input_gradient(build(type_name, **params))
    assert conditional < 4 * unconditional


def test_concat_critic_depends_on_the_label() -> None:
    critic = build("conv_critic", image_shape=[1, 8, 8], num_classes=3, conditioning="concat", hidden=8, **SMALL)
    x = torch.rand(1, 1, 8, 8).expand(3, 1, 8, 8)
    scores = critic(x, torch.tensor([0, 1, 2]))
    assert scores.shape == (3, 1) and scores.unique().numel() == 3


@pytest.mark.parametrize("type_name", ["conv_critic", "mlp_critic"])
def test_joint_critic(type_name: str) -> None:
    shape = {"image_shape": [1, 8, 8], "hidden": 8, **SMALL} if type_name == "conv_critic" else {"in_shape": [1, 8, 8]}
    critic = build(type_name, joint_dim=2, **shape)
    x = torch.rand(1, 1, 8, 8).expand(3, 1, 8, 8)
    z = torch.randn(3, 2)
    scores = critic(x, z)
    assert scores.shape == (3, 1) and scores.unique().numel() == 3, "the score depends on z"
    assert critic.features(x, z).shape[0] == 3
    with pytest.raises(TypeError, match=r"critic\(x, z\)"):
        critic(x)


def test_joint_conditional_critic_takes_x_z_y() -> None:
    critic = build("mlp_critic", in_shape=[2], joint_dim=3, num_classes=4, hidden=[8])
    assert critic(torch.randn(5, 2), torch.randn(5, 3), torch.randint(0, 4, (5,))).shape == (5, 1)


@pytest.mark.parametrize("type_name", ["conv_critic", "mlp_critic"])
def test_auxiliary_classifier_head(type_name: str) -> None:
    shape = {"image_shape": [1, 8, 8], **SMALL} if type_name == "conv_critic" else {"in_shape": [1, 8, 8]}
    critic = build(type_name, ac_classes=10, **shape)
    x = torch.rand(4, 1, 8, 8)
    score, logits = critic(x)
    assert score.shape == (4, 1) and logits.shape == (4, 10)
    h = critic.features(x)
    torch.testing.assert_close(score, critic.out(h))
    torch.testing.assert_close(logits, critic.classifier(h))


def test_mlp_generator_and_critic() -> None:
    ctx = Context(digits_like())
    generator = build("mlp_generator", ctx, latent_dim=4, hidden=[16], norm="batch", output="tanh", num_classes=3)
    images = generator(torch.randn(6, 4), torch.arange(6) % 3)
    assert images.shape == (6, 1, 8, 8) and images.abs().max() <= 1
    critic = build("mlp_critic", ctx, hidden=[16, 8], norm="layer", conditioning="concat", num_classes=3, embed_dim=2)
    assert critic(images, torch.arange(6) % 3).shape == (6, 1)
    assert critic.features(images, torch.arange(6) % 3).shape == (6, 8)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_translator_maps_images_to_images(norm: str) -> None:
    translator = build("conv_translator", image_shape=[1, 8, 8], blocks=2, norm=norm, output="sigmoid", **SMALL).eval()
    images = torch.rand(3, 4, 1, 8, 8)
    mapped = translator(images)
    assert mapped.shape == images.shape and 0 <= mapped.min() and mapped.max() <= 1
    torch.testing.assert_close(mapped[2], translator(images[2]))
    to_rgb = build("conv_translator", image_shape=[1, 8, 8], out_channels=3, blocks=0, **SMALL)
    assert to_rgb(images[0]).shape == (4, 3, 8, 8)


def test_residual_block_skips_its_body() -> None:
    """With the last convolution zeroed the body outputs 0, so the block is the identity."""
    block = convnets.ResidualBlock(4, "none", sn=False)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        block.body[-2].weight.zero_()
        block.body[-2].bias.zero_()
    torch.testing.assert_close(block(x), x)


def test_conv_decoder_is_the_generator_as_a_network() -> None:
    decoder = build("conv_decoder", latent_dim=2, image_shape=[1, 8, 8], **SMALL)
    assert decoder(torch.randn(3, 2)).shape == (3, 1, 8, 8)


def test_conv_encoder_reads_a_context_beside_the_image_features() -> None:
    """``Linear(h ‖ c)`` on the trunk's features h: the context changes the output and broadcasts over sample dims."""
    torch.manual_seed(0)
    encoder = build("conv_encoder", image_shape=[1, 8, 8], out_features=5, context_features=3, **SMALL).eval()
    x, c = torch.rand(2, 4, 1, 8, 8), torch.randn(4, 3)
    out = encoder(x, c)
    assert out.shape == (2, 4, 5)
    torch.testing.assert_close(out[1], encoder(x[1], c))
    h = encoder.trunk(x[0])
    torch.testing.assert_close(out[0], encoder.out(torch.cat([h, c], -1)))
    assert not torch.allclose(out, encoder(x, c + 1)), "the output depends on the context"
    with pytest.raises(ValueError, match="needs a context"):
        encoder(x)
    with pytest.raises(ValueError, match="takes no context"):
        build("conv_encoder", image_shape=[1, 8, 8], out_features=5, **SMALL)(x, c)


@pytest.mark.parametrize(
    ("type_name", "params"),
    [
        ("conv_decoder", {"image_shape": [1, 8, 8], **SMALL}),
        ("conv_generator", {"image_shape": [1, 8, 8], **SMALL}),
        ("mlp_generator", {"out_shape": [1, 8, 8], "hidden": [8]}),
    ],
)
def test_generators_read_a_context_vector_beside_z(type_name: str, params: dict) -> None:
    torch.manual_seed(0)
    generator = build(type_name, latent_dim=3, context_features=2, **params).eval()
    z, c = torch.randn(1, 3).expand(4, 3), torch.randn(4, 2)
    images = generator(z, c)
    assert images.shape == (4, 1, 8, 8)
    assert not torch.allclose(images[0], images[1]), "the same z gives another image for another context"
    torch.testing.assert_close(generator(z.expand(2, 4, 3), c)[1], images)  # the context broadcasts over sample dims
    with pytest.raises(ValueError, match="needs a context"):
        generator(z)


@pytest.mark.parametrize(
    ("type_name", "params"),
    [
        ("mlp_critic", {"in_shape": [2], "norm": "instance"}),
        ("mlp_critic", {"in_shape": [2], "embed_dim": 4, "num_classes": 3}),  # projection sets its own size
        ("conv_critic", {"image_shape": [1, 8, 8], "hidden": 8}),  # nothing to mix
        ("conv_generator", {"latent_dim": 2, "embed_dim": 3}),  # embedding without classes
        ("conv_generator", {"latent_dim": 2, "image_shape": [8, 8]}),
        ("conv_critic", {"image_shape": [1, 8, 8], "ac_classes": 1}),
        ("conv_generator", {"latent_dim": 2, "num_classes": 3, "context_features": 3}),  # labels or a context, not both
        ("mlp_generator", {"latent_dim": 2, "num_classes": 3, "context_features": 3}),
        ("conv_encoder", {"out_features": 2, "context_features": -1}),
    ],
)
def test_bad_parameters_are_rejected(type_name: str, params: dict) -> None:
    with pytest.raises(pydantic.ValidationError):
        CATALOGUE.get(type_name).params(**params)


def test_gradients_reach_every_parameter() -> None:
    generator = build("conv_generator", latent_dim=3, image_shape=[1, 8, 8], num_classes=3, **SMALL)
    critic = build("conv_critic", image_shape=[1, 8, 8], num_classes=3, ac_classes=3, spectral_norm=True, **SMALL)
    y = torch.tensor([0, 1, 2, 0])
    score, logits = critic(generator(torch.randn(4, 3), y), y)
    (score.sum() + logits.sum()).backward()
    for module in (generator, critic):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


@pytest.mark.parametrize(
    ("type_name", "params"),
    [
        ("conv_critic", {"joint_dim": 3, "hidden": 8, "num_classes": 4, "conditioning": "concat", "embed_dim": 2}),
        ("conv_critic", {"num_classes": 4, "ac_classes": 4, "spectral_norm": True}),
        ("conv_generator", {"latent_dim": 2, "num_classes": 3, "embed_dim": 5}),
        ("conv_encoder", {"out_features": 2}),
        ("conv_encoder", {"out_features": 2, "context_features": 10}),
        ("conv_generator", {"latent_dim": 2, "context_features": 10}),
        ("conv_translator", {"out_channels": 3}),
        ("mlp_critic", {"num_classes": 3}),
        ("mlp_generator", {"latent_dim": 2}),
    ],
)
def test_parameters_survive_a_dump_and_reload(type_name: str, params: dict) -> None:
    """Run folders store the resolved spec with every default written out; it must load again."""
    model = CATALOGUE.get(type_name).params
    parsed = model(**params)
    assert model.model_validate(parsed.model_dump(mode="json")) == parsed


@pytest.mark.parametrize(
    ("type_name", "params"),
    [("conv_encoder", {"out_features": 3}), ("conv_translator", {"blocks": 0})],
)
def test_image_networks_refuse_images_of_another_shape_instead_of_reshaping_them(type_name: str, params: dict) -> None:
    """A (N, 1, 16, 16) batch reshaped to 8x8 images would be 4N examples; a flat (N, 64) one would lose its batch."""
    net = build(type_name, image_shape=[1, 8, 8], **params, **SMALL)
    assert net(torch.rand(5, 1, 8, 8)).shape[0] == 5
    with pytest.raises(ValueError) as error:
        net(torch.rand(5, 1, 16, 16))
    message = str(error.value)
    assert f"{type_name} reads examples of shape (1, 8, 8) (its image_shape)" in message
    assert "4 examples each" in message and "image_shape: [1, 16, 16]" in message
    with pytest.raises(ValueError, match=r"got x of shape \(5, 64\), whose examples are \(64,\)") as error:
        net(torch.rand(5, 64))
    assert "image_shape: [64]" not in str(error.value) and "load the data as (N, C, H, W) images" in str(error.value)


@pytest.mark.parametrize(
    ("type_name", "params"),
    [("conv_encoder", {"out_features": 3}), ("conv_encoder", {"out_features": 3, "image_shape": [1, 8, 8]}), ("conv_critic", {}), ("conv_translator", {})],
)
def test_image_readers_refuse_flat_data_at_build_and_say_how_to_have_images(type_name: str, params: dict) -> None:
    """An image dataset read with ``shape: flat`` keeps its image_shape; the networks failed in the first pass, advising image_shape: [64]."""
    part = TensorData({"x": torch.rand(6, 64)}, image_shape=(1, 8, 8))
    ctx = Context(Splits(part, part))
    with pytest.raises(ValueError) as error:
        build(type_name, ctx, **params, **SMALL)
    message = str(error.value)
    assert message.startswith(f"{type_name}: needs images of shape (C, H, W); the data's examples are flat, of shape (64,) (images (1, 8, 8) flattened)")
    assert "`shape: image` for digits, mnist_idx or image_folder" in message and "`{type: reshape, shape: [1, 8, 8]}` for npz or npy" in message
    assert build("conv_generator", ctx, latent_dim=3, **SMALL)(torch.randn(2, 3)).shape == (2, 1, 8, 8), "a generator reads no x"


@pytest.mark.parametrize(("type_name", "params"), [("conv_generator", {"latent_dim": 3}), ("conv_critic", {}), ("conv_encoder", {"out_features": 3})])
def test_instance_norm_on_a_one_pixel_level_is_refused_at_build(type_name: str, params: dict) -> None:
    """min_size: 1 halves 8x8 down to 1x1, where instance norm has one position per channel: torch failed in the first pass."""
    with pytest.raises(ValueError, match=rf"^{type_name}: norm: instance .* smallest feature map is 1x1.*min_size: 2 or more"):
        build(type_name, image_shape=[1, 8, 8], min_size=1, norm="instance", **params, **SMALL)
    net = build(type_name, image_shape=[1, 8, 8], min_size=2, norm="instance", **params, **SMALL)
    net(torch.randn(2, 3) if type_name == "conv_generator" else torch.rand(2, 1, 8, 8))
    build(type_name, image_shape=[1, 8, 8], min_size=1, norm="layer", **params, **SMALL)
