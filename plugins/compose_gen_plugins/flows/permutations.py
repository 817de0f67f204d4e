"""Fixed permutations of the first event dimension (features, or channels of images).

Between coupling layers they let every dimension be transformed (Dinh et al.
2014, arXiv:1410.8516; Kingma & Dhariwal 2018, arXiv:1807.03039).  A learned
permutation is the invertible 1x1 convolution of :mod:`.glow`.
"""

from __future__ import annotations

import warnings

import torch
from pydantic import ConfigDict, Field
from torch import Tensor

from compose_gen import Bijector, BuildContext, ComponentType, Params, Seed, SpecWarning, hookimpl
from compose_gen_plugins.flows import EventShape

__all__ = ["Permutation", "random_permutation"]


class Permutation(Bijector):
    r""":math:`y_i = x_{\pi(i)}` along the first event dimension; :math:`\log|\det J| = 0`."""

    def __init__(self, shape: tuple[int, ...], permutation: Tensor) -> None:
        super().__init__(shape)
        if sorted(permutation.tolist()) != list(range(shape[0])):
            raise ValueError(f"{permutation.tolist()} is not a permutation of range({shape[0]})")
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", permutation.argsort())

    def _permute(self, x: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        return x.index_select(-len(self.event_shape), index), x.new_zeros(self.batch_shape(x))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._permute(x, self.permutation)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._permute(y, self.inverse_permutation)


class ReverseParams(Params):
    """Reverse the order of features or channels."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"shape": [5]}, {"shape": [3, 2, 2]}]})
    shape: EventShape = Field(..., description="event shape; its first dimension (features or channels) is reversed")


class RandomPermutationParams(Params):
    """A fixed random permutation of features or channels, drawn from ``seed`` (never the identity)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"shape": [6], "seed": 3}]})
    shape: EventShape = Field(..., description="event shape; its first dimension (features or channels) is permuted")
    seed: Seed = Field(
        0, description="seed of the random permutation π (redrawn while it is the identity; each copy of a flow's `repeat` has its own seed)"
    )


def build_reverse(params: ReverseParams, ctx: BuildContext) -> Permutation:
    """Reverse the features (or channels): y_i = x_{D-1-i}.

    yᵢ = x_{D−1−i}, i = 0..D−1 along the first event dimension (D features, or the channels of an image);
    a permutation, so log|det ∂y/∂x| = 0.  Between coupling layers it lets the untouched half be transformed next.

    Dinh et al. 2015, "NICE: Non-linear Independent Components Estimation" (alternating the halves);
    Kingma & Dhariwal 2018, "Glow: Generative Flow with Invertible 1x1 Convolutions" (reverse as a baseline).
    """
    if params.shape[0] == 1:
        warnings.warn(SpecWarning(_reverse_of_one(params.shape)), stacklevel=2)
    return Permutation(tuple(params.shape), torch.arange(params.shape[0] - 1, -1, -1))


def _reverse_of_one(shape: list[int]) -> str:
    """Why ``reverse`` on a first dimension of size 1 is the identity, and what mixes such data instead."""
    if len(shape) != 3:
        return f"reverse on shape {shape} permutes nothing: there is one feature, so the layer is the identity; remove it"
    return (
        f"reverse on shape {shape} permutes nothing: it reverses the channels, and there is one, so the layer is the "
        "identity. To let every pixel be transformed, alternate the parity of checkerboard couplings (flip: true on every "
        "other one), or squeeze to 4 channels first, which reverse, random_permutation or invertible_conv1x1 can then mix"
    )


def build_random_permutation(params: RandomPermutationParams, ctx: BuildContext) -> Permutation:
    """Fixed random permutation of the features (or channels), seeded; an identity draw is drawn again.

    yᵢ = x_{π(i)} along the first event dimension, π drawn once from ``seed`` (never the identity when D > 1) and
    fixed; a permutation, so log|det ∂y/∂x| = 0.

    Kingma & Dhariwal 2018, "Glow: Generative Flow with Invertible 1x1 Convolutions" (the shuffle baseline).
    """
    return Permutation(tuple(params.shape), random_permutation(params.shape[0], params.seed))


def random_permutation(size: int, seed: int) -> Tensor:
    """``torch.randperm(size)`` from a generator seeded with ``seed``, drawn again from it while it is the identity.

    A permutation that moves nothing would make a "random permutation" layer a no-op
    (for 2 features, half of all seeds), so the deterministic rule is: the first draw
    of the seeded generator that is not the identity (for ``size`` 1, the identity).
    """
    generator = torch.Generator().manual_seed(seed)
    identity = torch.arange(size)
    permutation = torch.randperm(size, generator=generator)
    while size > 1 and torch.equal(permutation, identity):
        permutation = torch.randperm(size, generator=generator)
    return permutation


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("reverse", "bijector", ReverseParams, build_reverse),
        ComponentType("random_permutation", "bijector", RandomPermutationParams, build_random_permutation),
    ]
