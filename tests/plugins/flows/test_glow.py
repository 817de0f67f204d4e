"""Glow: squeeze layout, actnorm initialisation and checkpoints, 1x1 convolutions, exact multi-scale."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from compose_gen_plugins.flows.glow import ActNorm, GlowParams, InvertibleConv1x1, Squeeze, build_glow


def perturbed(module, scale: float = 0.1, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


def test_squeeze_turns_2x2_patches_into_channels():
    x = torch.arange(16.0).reshape(1, 4, 4)
    y, _ = Squeeze((1, 4, 4))(x)
    expected = torch.stack([x[0, ::2, ::2], x[0, ::2, 1::2], x[0, 1::2, ::2], x[0, 1::2, 1::2]])
    assert torch.equal(y, expected)


def test_actnorm_standardises_the_first_training_batch_per_channel():
    torch.manual_seed(0)
    scale, shift = torch.tensor([1.0, 2.0, 3.0])[:, None, None], torch.tensor([3.0, -1.0, 0.0])[:, None, None]
    x = torch.randn(64, 3, 4, 4) * scale + shift
    actnorm = ActNorm((3, 4, 4))
    y, ladj = actnorm(x)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5, rtol=0)
    log_std = x.transpose(0, 1).reshape(3, -1).std(1, unbiased=False).log()
    torch.testing.assert_close(ladj, -16 * log_std.sum().expand(64), rtol=1e-4, atol=0)
    state = {k: v.clone() for k, v in actnorm.state_dict().items()}
    actnorm(x + 5)  # later batches do not initialise again
    assert all(torch.equal(v, actnorm.state_dict()[k]) for k, v in state.items())


def test_actnorm_keeps_unit_scale_for_a_channel_constant_over_its_first_batch():
    """A batch of one (every channel constant) set log σ = log 1e-6, so the next batch came out 10⁶ times too wide."""
    actnorm = ActNorm((2,))
    actnorm(torch.tensor([[0.5, -1.0]]))
    torch.testing.assert_close(actnorm.loc.detach(), torch.tensor([0.5, -1.0]))
    assert torch.equal(actnorm.log_scale.detach(), torch.zeros(2))
    assert torch.isfinite(actnorm(torch.randn(16, 2) * 3)[0]).all()


@pytest.mark.parametrize(("dtype", "spread"), [(torch.float32, 1e20), (torch.float64, 1e160)])
def test_actnorm_refuses_a_first_batch_whose_variance_overflows(dtype: torch.dtype, spread: float):
    """Values spread by 1e20 are finite in float32, their variance is not: the layer became all zeros with ladj -inf,
    which the NaN guard then blamed on the component.  The message names the precision the values are in."""
    actnorm = ActNorm((2,)).to(dtype)
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(ValueError, match=f"actnorm: the first batch's values spread so far .* that their variance overflows {name};"):
        actnorm(torch.tensor([[spread, 0.0], [-spread, 1.0]], dtype=dtype))
    assert not actnorm.initialized


def test_actnorm_does_not_initialise_in_eval_mode():
    actnorm = ActNorm((2,)).eval()
    x = torch.randn(8, 2) + 4
    assert torch.equal(actnorm(x)[0], x) and not actnorm.initialized


def test_actnorm_initialisation_survives_a_safetensors_checkpoint(tmp_path):
    trained = ActNorm((3, 2, 2))
    trained(torch.randn(16, 3, 2, 2) * 3 + 1)
    save_file(trained.state_dict(), tmp_path / "actnorm.safetensors")
    restored = ActNorm((3, 2, 2))
    restored.load_state_dict(load_file(tmp_path / "actnorm.safetensors"))
    assert restored.initialized
    x = torch.randn(16, 3, 2, 2) - 7  # would move the statistics if it initialised again
    torch.testing.assert_close(restored(x), trained(x))


@pytest.mark.parametrize("lu", [True, False])
def test_conv1x1_log_det_and_starting_rotation(lu):
    conv = InvertibleConv1x1((4, 3, 3), lu=lu).double()
    weight, log_det = conv.weight_and_log_det()
    torch.testing.assert_close(weight @ weight.T, torch.eye(4, dtype=torch.float64), atol=1e-6, rtol=0)  # a rotation
    perturbed(conv)
    weight, log_det = conv.weight_and_log_det()
    torch.testing.assert_close(log_det, torch.linalg.slogdet(weight).logabsdet)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    y, ladj = conv(x)
    torch.testing.assert_close(y[:, :, 1, 2], x[:, :, 1, 2] @ weight.T)
    torch.testing.assert_close(ladj, 9 * log_det.expand(2))


def test_glow_multiscale_sampling_and_reconstruction_are_exact():
    glow = perturbed(build_glow(GlowParams(shape=[1, 8, 8], levels=2, steps=2, hidden=[8]), None).double())
    glow(torch.rand(32, 1, 8, 8, dtype=torch.float64))  # actnorm initialisation
    assert glow.out_event_shape == (64,)
    z = torch.randn(5, 64, dtype=torch.float64)
    x, ladj_inverse = glow.inverse(z)  # sampling
    z_back, ladj = glow(x)
    torch.testing.assert_close(z_back, z, atol=1e-10, rtol=0)
    torch.testing.assert_close(ladj, -ladj_inverse, atol=1e-10, rtol=0)
    x_back, _ = glow.inverse(glow(x)[0])  # reconstruction
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=0)


def test_glow_factors_out_half_of_the_first_level_into_the_first_latents():
    glow = perturbed(build_glow(GlowParams(shape=[1, 4, 4], levels=2, steps=1, hidden=[4]), None))
    x = torch.randn(3, 1, 4, 4)
    h, _ = glow.level(x)  # squeeze and steps of level 1: (4, 2, 2)
    z, _ = glow(x)
    assert torch.equal(z[:, :8], h[:, :2].flatten(1))
    assert torch.equal(z[:, 8:], glow.inner(h[:, 2:])[0])


def test_glow_needs_divisible_images():
    with pytest.raises(ValidationError, match="divisible by 4"):
        GlowParams(shape=[1, 6, 6], levels=2)
