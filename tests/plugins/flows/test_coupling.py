"""Coupling layers: masks, the triangular structure, bounded scales and context."""

from __future__ import annotations

import re

import pytest
import torch
from pydantic import ValidationError

from compose_gen_plugins.flows.coupling import (
    AdditiveCoupling,
    AffineCoupling,
    AffineCouplingParams,
    coupling_mask,
)
from compose_gen_plugins.flows.spline import SplineCoupling, SplineTransform


def perturbed(bijector, scale: float = 0.5, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in bijector.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return bijector


def test_masks():
    assert coupling_mask((5,), "half").tolist() == [1, 1, 0, 0, 0]
    assert coupling_mask((5,), "alternating").tolist() == [1, 0, 1, 0, 1]
    assert coupling_mask((1, 2, 3), "checkerboard").tolist() == [[[1, 0, 1], [0, 1, 0]]]
    assert coupling_mask((4, 1, 1), "channel").flatten().tolist() == [1, 1, 0, 0]
    assert coupling_mask((5,), "half", flip=True).tolist() == [0, 0, 1, 1, 1]


@pytest.mark.parametrize("cls", [AdditiveCoupling, AffineCoupling])
def test_coupling_starts_as_identity_and_keeps_the_conditioning_part(cls):
    x = torch.randn(7, 2, 4, 4)
    layer = cls((2, 4, 4), mask="checkerboard", hidden=[8])
    assert torch.equal(layer(x)[0], x)
    y, _ = perturbed(layer)(x)
    mask = layer.mask.bool()
    assert torch.equal(y[:, mask], x[:, mask]) and not torch.allclose(y[:, ~mask], x[:, ~mask])


def test_transformed_part_depends_only_on_the_conditioning_part():
    layer = perturbed(AffineCoupling((6,), mask="alternating", hidden=[16]))
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    layer.double()
    jacobian = torch.autograd.functional.jacobian(lambda v: layer(v)[0], x)
    free = ~layer.mask.bool()
    block = jacobian[free][:, free]
    assert torch.equal(block, torch.diag(block.diagonal()))  # ∂y_B/∂x_B is diagonal


def test_halves_in_different_precisions_join_in_the_wider_one():
    """Compiled under CUDA's autocast, a Glow step's 1×1 convolution hands on bf16 while ``exp`` keeps y_t float32."""
    layer = AffineCoupling((6,), mask="alternating", hidden=[8]).to(torch.bfloat16)
    x = torch.randn(3, 6).to(torch.bfloat16)
    y, _ = layer.couple(x, None, lambda x_t, params: (2 * x_t.float(), torch.zeros(3)))
    mask = layer.mask.bool()
    assert y.dtype == torch.float32
    assert torch.equal(y[:, mask], x[:, mask].float()) and torch.equal(y[:, ~mask], 2 * x[:, ~mask].float())


@pytest.mark.parametrize(("scale", "bound"), [("clamp", 1.5), ("tanh", 1.0)])
def test_log_scale_is_bounded(scale, bound):
    layer = AffineCoupling((4,), hidden=[8], scale=scale, clamp=1.5)
    with torch.no_grad():
        layer.conditioner.net[-1].bias.fill_(1e4)  # huge raw log-scales
    _, ladj = layer(torch.randn(3, 4))
    assert (ladj.abs() <= 2 * bound).all() and (ladj.abs() > 0.9 * 2 * bound).all()  # 2 transformed dims


@pytest.mark.parametrize("shape", [(5,), (2, 2, 2)])
def test_context_conditions_the_transform(shape):
    layer = perturbed(AffineCoupling(shape, hidden=[8], context_features=3))
    x, context = torch.randn(4, *shape), torch.randn(4, 3)
    y, ladj = layer(x, context)
    assert not torch.allclose(y, layer(x, torch.randn(4, 3))[0])
    x_back, ladj_back = layer.inverse(y, context)
    torch.testing.assert_close((x_back, ladj_back), (x, -ladj))
    assert layer.context_shape == (3,)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"shape": [4], "mask": "checkerboard"}, "mask 'checkerboard' needs an image shape"),
        ({"shape": [4], "conditioner": "conv"}, "conditioner 'conv' needs an image shape"),
        ({"shape": [1, 2, 2], "mask": "channel"}, "at least 2 channels"),
        ({"shape": [4], "scale": "sigmoid"}, "scale"),
    ],
)
def test_params_reject_impossible_layers(params, message):
    with pytest.raises(ValidationError, match=message):
        AffineCouplingParams(**params)


def spline_coupling(shape, **kwargs):
    return SplineCoupling(shape, SplineTransform(4, 3.0, 1e-3, 1e-3, 1e-3), **kwargs)


@pytest.mark.parametrize(
    ("shape", "mask", "flip", "message"),
    [
        ((1,), "half", False, "at least 2 features: mask 'half' on shape [1] leaves nothing to condition on; on one feature use"),
        ((1,), "alternating", False, "at least 2 features: mask 'alternating' on shape [1] leaves nothing to transform"),
        ((1,), "half", True, "at least 2 features: mask 'half' (flipped) on shape [1] leaves nothing to transform"),
        ((3, 1, 1), "checkerboard", False, "features on both sides of its mask: mask 'checkerboard' on shape [3, 1, 1] leaves nothing to transform"),
        ((1, 2, 2), "channel", False, "features on both sides of its mask: mask 'channel' on shape [1, 2, 2] leaves nothing to condition on"),
    ],
)
@pytest.mark.parametrize("make", [AdditiveCoupling, AffineCoupling, spline_coupling])
def test_every_coupling_refuses_a_mask_that_leaves_a_part_empty(shape, mask, flip, message, make):
    """Built, such a layer failed only in its first pass, with torch's "cannot reshape tensor of 0 elements"."""
    with pytest.raises(ValueError, match=re.escape(f"a coupling needs {message}")):
        make(shape, mask=mask, flip=flip, hidden=[4])
