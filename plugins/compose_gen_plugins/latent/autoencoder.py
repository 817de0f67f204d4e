r"""The deterministic autoencoder (Hinton & Salakhutdinov 2006, "Reducing the Dimensionality of Data with Neural Networks").

A code :math:`z = e(x)` from an encoder network and a decoder distribution
:math:`p(x|z)`, trained to minimise the reconstruction negative log-likelihood

.. math:: \mathcal{L}(x) = -\log p(x \mid z = e(x)),

which is the squared error for a fixed-variance Gaussian decoder and the
cross-entropy for a Bernoulli one.  Not a generative model: it has no prior to
sample from, but it encodes, decodes and reconstructs for the grid metrics.
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import Field
from torch import Tensor, nn

from compose_gen import BuildContext, ComponentType, Loss, Params, Ref, Value, hookimpl
from compose_gen_plugins.latent.model import caution_unbounded, decoded_log_prob

__all__ = ["Autoencoder", "AutoencoderParams", "build_autoencoder"]


class Autoencoder(Loss):
    """Mean over the batch of −log p(x | e(x))."""

    terms = ("loss",)

    def __init__(self, encoder: nn.Module, decoder: nn.Module, x_value: str = "x") -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        #: The graph value of the examples x, for metrics to compute.
        self.x_value = x_value

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z).mean

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def forward(self, inputs: Mapping[str, Any], terms: frozenset[str]) -> dict[str, Tensor]:
        x = inputs["x"]
        reconstruction = decoded_log_prob(self.decoder(self.encoder(x)), x).mean()
        return {"loss": -reconstruction, "reconstruction": reconstruction.detach()}


class AutoencoderParams(Params):
    encoder: Ref("network") = Field(..., description="encoder network e: x -> z")  # type: ignore[valid-type]
    decoder: Ref("decoder") = Field(..., description="decoder p(x|z)")  # type: ignore[valid-type]
    x: Value = Field("x", description="graph value with the examples x")


def build_autoencoder(p: AutoencoderParams, ctx: BuildContext) -> Autoencoder:
    """Deterministic autoencoder: minimise −log p(x | z = e(x)).

    loss = −E_x[log p(x | z = e(x))]: the decoder's likelihood of x given its code, with no prior on z
    (a Gaussian decoder of fixed σ makes it the squared error ‖x − d(e(x))‖² / 2σ² plus a constant).

    Hinton & Salakhutdinov 2006, "Reducing the Dimensionality of Data with Neural Networks".
    """
    caution_unbounded(p.x, ctx.component(p.decoder), ctx)
    return Autoencoder(ctx.component(p.encoder), ctx.component(p.decoder), p.x)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [ComponentType("autoencoder", "loss", AutoencoderParams, build_autoencoder)]
